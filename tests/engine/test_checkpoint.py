"""Atomic checkpoint writes, retention and resume from the newest readable file."""
import os

import pytest
import torch

from engine import checkpoint as ckpt


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
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        path, state = ckpt.load_newest(tmp_path, logged.append)
    assert path.endswith("checkpoint_000000030.pt") and state["step"] == 30
    assert "checkpoint_000000040.pt" in logged[0]


def test_no_checkpoint(tmp_path):
    assert ckpt.load_newest(tmp_path) == (None, None)


def test_weights_only_refuses_code(tmp_path):
    path = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"x": Evil()}, path)
    with pytest.raises(Exception):
        ckpt.load(path)


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    from engine.checkpoint import remove_stale_temporaries
    (tmp_path / ".tmp-abc").write_bytes(b"x")
    (tmp_path / "checkpoint_000000001.pt").write_bytes(b"keep")
    (tmp_path / "notes.tmp").write_bytes(b"keep")
    assert remove_stale_temporaries(str(tmp_path)) == [str(tmp_path / ".tmp-abc")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000000001.pt", "notes.tmp"]
