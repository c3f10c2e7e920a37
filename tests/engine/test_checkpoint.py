"""Atomic checkpoint writes, retention and resume from the newest readable file."""
import os

import pytest
import torch

from engine import checkpoint as ckpt
from tests.faults import flip_tensor_byte, small_disk


def test_atomic_save_failure_keeps_previous_file(tmp_path):
    path = tmp_path / "c.pt"
    ckpt.atomic_save({"v": torch.tensor(1)}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        ckpt.atomic_save({"v": Boom()}, path)
    assert ckpt.load(path)["v"].item() == 1
    assert os.listdir(tmp_path) == ["c.pt"]  # no temporary file left behind


def test_retention_and_newest_readable(tmp_path):
    for step in (10, 20, 30, 40):
        ckpt.save_periodic({"step": step}, tmp_path, step, keep_last=3)
    names = sorted(os.listdir(tmp_path))
    assert names == ["checkpoint_000000020.pt", "checkpoint_000000030.pt", "checkpoint_000000040.pt"]
    newest = tmp_path / "checkpoint_000000040.pt"
    newest.write_bytes(newest.read_bytes()[:50])  # truncated by a crash
    logged = []
    path, state = ckpt.load_newest(tmp_path, logged.append)
    assert path.endswith("checkpoint_000000030.pt") and state["step"] == 30
    assert len(logged) == 1 and "skipping unreadable checkpoint" in logged[0]  # said once, through the log
    assert "checkpoint_000000040.pt" in logged[0]


def test_no_checkpoint(tmp_path):
    assert ckpt.load_newest(tmp_path) == (None, None)


def test_weights_only_refuses_code(tmp_path):
    path = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"x": Evil()}, path)
    with pytest.raises(ValueError, match="UnpicklingError"):
        ckpt.load(path)


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    from engine.run_folder import remove_stale_temporaries
    (tmp_path / ".tmp-abc").write_bytes(b"x")
    (tmp_path / "checkpoint_000000001.pt").write_bytes(b"keep")
    (tmp_path / "notes.tmp").write_bytes(b"keep")
    assert remove_stale_temporaries(str(tmp_path)) == [str(tmp_path / ".tmp-abc")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000000001.pt", "notes.tmp"]


def test_a_flipped_bit_in_tensor_data_fails_the_checksum(tmp_path):
    weights = torch.randn(1000, dtype=torch.float64)
    ckpt.save_periodic({"model": {"w": weights}, "step": 1}, tmp_path, 1, keep_last=3)
    ckpt.save_periodic({"model": {"w": weights + 1}, "step": 2}, tmp_path, 2, keep_last=3)
    newest = tmp_path / "checkpoint_000000002.pt"
    flip_tensor_byte(newest)
    # torch itself loads the damaged file without complaint: only the checksum can tell
    raw = torch.load(newest, weights_only=True)
    assert not torch.equal(raw["model"]["w"], weights + 1)
    with pytest.raises(ValueError, match="checksum mismatch"):
        ckpt.load(newest)
    logged = []
    path, state = ckpt.load_newest(tmp_path, logged.append)
    assert path.endswith("checkpoint_000000001.pt") and torch.equal(state["model"]["w"], weights)
    assert len(logged) == 1 and "checksum mismatch" in logged[0]


def test_checksum_covers_every_value_and_ignores_key_order():
    from models.checkpoints import content_digest
    base = {"a": torch.arange(4.0), "b": [1, 2.5, None, "x"], "c": {"n": torch.tensor(True)}}
    assert content_digest(base) == content_digest(dict(reversed(list(base.items()))))
    variants = [{**base, "a": torch.arange(4.0).double()}, {**base, "a": torch.arange(4.0).reshape(2, 2)},
                {**base, "b": [1, 2.5000001, None, "x"]}, {**base, "b": [1, 2.5, 0, "x"]},
                {**base, "c": {"n": torch.tensor(False)}}, {**base, "d": 0}]
    digests = {content_digest(v) for v in variants}
    assert len(digests) == len(variants) and content_digest(base) not in digests


def test_full_disk_keeps_the_last_good_checkpoint_and_says_so(tmp_path):
    with small_disk(tmp_path / "disk", "256k") as disk:
        ckpt.save_periodic({"w": torch.zeros(1000)}, disk, 1, keep_last=5)
        with pytest.raises(ckpt.RunFolderError) as caught:
            ckpt.save_periodic({"w": torch.zeros(100_000)}, disk, 2, keep_last=5)  # 400 kB on a 256 kB disk
        message = str(caught.value)
        assert "no space left on device writing" in message and "checkpoint_000000002.pt" in message
        assert f"the last good checkpoint {disk / 'checkpoint_000000001.pt'} is intact" in message
        assert "\n" not in message
        assert sorted(os.listdir(disk)) == ["checkpoint_000000001.pt"]  # no partial file left behind
        assert torch.equal(ckpt.load(disk / "checkpoint_000000001.pt")["w"], torch.zeros(1000))


def test_read_only_folder_gives_one_line(tmp_path):
    from engine.run_folder import write_final
    with small_disk(tmp_path / "ro", "64k", readonly=True) as disk:
        with pytest.raises(ckpt.RunFolderError, match="Read-only file system; choose a writable log.out_dir"):
            write_final(disk / "run", {"status": "finished"})


def test_which_config_changes_a_resume_refuses():
    from configs import Config, to_dict
    from engine.resume import check_config_change
    from engine.run_folder import RunFolderError
    saved = to_dict(Config())
    for key in ("model.depth", "norm.momentum", "batch.gpus", "optim.weight_decay", "schedule.milestones",
                "data.root", "data.train_crop", "train.seed", "train.precision", "train.label_smoothing"):
        section, name = key.split(".")
        changed = {**saved, section: {**saved[section], name: "other"}}
        with pytest.raises(RunFolderError, match=f"changed experiment: {key} "):
            check_config_change(saved, changed, "RUN")
    for key in ("train.epochs", "train.max_iters", "train.eval_every", "log.print_every", "data.max_bad_images"):
        section, name = key.split(".")
        assert check_config_change(saved, {**saved, section: {**saved[section], name: 7}}, "RUN") == [key]
    for key in ("data.workers", "log.name", "checkpoint.every_iters", "checkpoint.resume"):
        section, name = key.split(".")
        assert check_config_change(saved, {**saved, section: {**saved[section], name: 7}}, "RUN") == []
