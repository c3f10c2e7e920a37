"""Pieces of the input-pipeline benchmark: steady-state rate, the JPEG cache, GPU-style augmentation (on CPU)."""
import os

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import RandomResizedCrop

from benchmarks.pipeline import decode_augment, jpeg_folder, list_jpegs, steady_rate
from data.transforms import IMAGENET_MEAN, IMAGENET_STD

# torchvision 0.29 deprecates its JPEG decoder in favour of TorchCodec; it is still the one the GPU path uses.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def test_steady_rate_skips_the_start_up_round():
    # 2 workers, 4 images per batch: start-up 5 s, then each worker delivers a batch every 2 s.
    arrivals = [5.0, 5.1, 7.0, 7.1, 9.0, 9.1, 11.0]
    # Rounds end at batches 1, 3, 5: 4 batches (16 images) between 5.1 s and 9.1 s; batch 6 is an incomplete round.
    assert steady_rate(arrivals, 4, 2) == pytest.approx(16 / 4.0)
    assert steady_rate([1.0, 1.5, 2.5], 8, 0) == pytest.approx(2 * 8 / 1.5)
    assert steady_rate([1.0, 1.0, 2.0], 4, 2) is None


def test_jpeg_folder_is_built_once(tmp_path):
    root = jpeg_folder(str(tmp_path), count=5, unique=2, progress=lambda m: None)
    files = list_jpegs(root)
    assert len(files) == 5 and os.path.samefile(files[0], files[2]) and not os.path.samefile(files[0], files[1])
    stamp = os.stat(files[0]).st_mtime_ns
    assert jpeg_folder(str(tmp_path), count=5, unique=2, progress=pytest.fail) == root
    assert os.stat(files[0]).st_mtime_ns == stamp
    assert [p for p in os.listdir(tmp_path) if ".tmp-" in p] == []


def test_decode_augment_matches_torchvision_transforms(tmp_path):
    files = list_jpegs(jpeg_folder(str(tmp_path), count=3, unique=3, progress=lambda m: None))
    encoded = [read_file(p) for p in files]
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.manual_seed(3)
    out = decode_augment(encoded, "cpu", 64, mean, std)
    torch.manual_seed(3)
    expected = []
    for data in encoded:
        image = decode_jpeg(data, mode=ImageReadMode.RGB)
        box = RandomResizedCrop.get_params(image, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3])
        crop = TF.resized_crop(image.float() / 255, *box, [64, 64], antialias=True)
        if torch.rand(()) < 0.5:
            crop = TF.hflip(crop)
        expected.append(TF.normalize(crop, IMAGENET_MEAN, IMAGENET_STD))
    assert out.shape == (3, 3, 64, 64)
    torch.testing.assert_close(out, torch.stack(expected), rtol=1e-5, atol=1e-5)
