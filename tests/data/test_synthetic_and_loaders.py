"""SyntheticDataset and the train/eval loaders built from a DataConfig."""
import dataclasses

import torch

from configs.schema import DataConfig
from data import SyntheticDataset, TrainSampler, build_eval_loader, build_train_loader

from .images import make_folder


def test_synthetic_samples_are_fixed_per_index():
    ds = SyntheticDataset(20, num_classes=5, size=8, seed=1)
    image, target, bad = ds[3]
    assert image.shape == (3, 8, 8) and 0 <= target < 5 and bad == -1
    assert torch.equal(ds[(3, 9)][0], image) and ds[(3, 9)][1] == target
    assert not torch.equal(ds[4][0], image)
    assert not torch.equal(SyntheticDataset(20, 5, 8, seed=2)[3][0], image)
    assert len({ds[i][1] for i in range(20)}) > 1


def test_synthetic_train_loader():
    cfg = DataConfig(synthetic=True, workers=0, train_crop=8)
    loader = build_train_loader(cfg, batch_size=16, rank=1, world=2, seed=0, num_classes=10)
    assert isinstance(loader.sampler, TrainSampler) and len(loader) == 1281 // 32 == loader.sampler.batches_per_epoch
    images, targets, bad = next(iter(loader))
    assert images.shape == (16, 3, 8, 8) and targets.max() < 10 and bad.dtype == torch.int64
    assert (bad == -1).all()
    eval_loader = build_eval_loader(dataclasses.replace(cfg, val_crop=8), batch_size=64, rank=0, world=3)
    assert sum(len(b[1]) for b in eval_loader) == len(range(0, 500, 3))


def test_folder_loaders_with_workers_report_bad_files_and_resume(tmp_path):
    make_folder(tmp_path / "train", per_class=6)
    make_folder(tmp_path / "val", per_class=3)
    garbage = tmp_path / "train" / "ant" / "2.jpg"
    garbage.write_bytes(b"garbage")
    cfg = DataConfig(root=str(tmp_path), workers=2, train_crop=16, val_resize=20, val_crop=16)
    seen = []
    for rank in range(2):                                  # 18 samples = 3 global batches of 2 x 3: none dropped
        loader = build_train_loader(cfg, batch_size=3, rank=rank, world=2, seed=4)
        ds = loader.dataset
        loader.sampler.set_epoch(1)
        full = list(loader)
        keys = list(loader.sampler)
        assert len(full) == 3 == loader.sampler.batches_per_epoch
        for (images, targets, bad), start in zip(full, range(0, len(keys), 3)):
            assert images.shape == (3, 3, 16, 16) and bad.dtype == torch.int64
            for j, (index, _) in enumerate(keys[start:start + 3]):
                seen.append(index)
                assert int(bad[j]) == (index if ds.samples[index][0] == str(garbage) else -1)
                if int(bad[j]) >= 0:
                    assert targets[j] == ds.samples[(index + 1) % 18][1]
    assert sorted(seen) == list(range(18))
    loader.sampler.set_epoch(1, start_batch=2)
    tail = list(loader)
    assert len(tail) == 1 == len(loader)
    assert torch.equal(tail[0][0], full[2][0]) and torch.equal(tail[0][1], full[2][1])

    targets = [t for r in range(2)
               for _, t, _ in build_eval_loader(dataclasses.replace(cfg, workers=0), 4, rank=r, world=2)]
    assert sorted(torch.cat(targets).tolist()) == [0] * 3 + [1] * 3 + [2] * 3
