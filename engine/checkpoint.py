"""Checkpoint files: atomic torch.save with a checksum, retention, and resume from the newest good one.

Their names and the atomic write itself belong to the run folder's contract (engine/run_folder.py)."""
import io
import os

import torch

from models.checkpoints import (
    load_file as load,  # weights_only=True, checksum verified; one-line ValueError
    with_checksum,
)

from .run_folder import RunFolderError, atomic_write, checkpoint_path, list_checkpoints, step_of


def atomic_copy(src, path):
    """Copy a file to `path` atomically (e.g. best.pt from the checkpoint just written)."""
    with open(src, "rb") as f:
        data = f.read()
    atomic_write(path, lambda out: out.write(data))


def atomic_save(obj, path):
    """torch.save `obj` to `path` atomically: a crash leaves the previous file or the new one, never half.

    Serialized in memory first, so a failing disk surfaces as a plain OSError of the write, not as an
    error from inside torch's zip writer.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def save_periodic(obj, folder, global_step, keep_last):
    """Write checkpoint_<step>.pt (with its content checksum) atomically, then delete older ones beyond
    the newest `keep_last`.

    Files of later steps (an unreadable leftover that resume skipped) are never counted or deleted here.
    A failed write names the newest checkpoint, which is intact.
    """
    path = checkpoint_path(folder, global_step)
    try:
        atomic_save(with_checksum(obj), path)
    except RunFolderError as e:
        older = [p for p in list_checkpoints(folder) if p != path]
        intact = f"the last good checkpoint {older[0]} is intact" if older else "no earlier checkpoint exists"
        raise RunFolderError(f"{e}; {intact}") from None
    for old in [p for p in list_checkpoints(folder) if step_of(p) <= global_step][keep_last:]:
        os.remove(old)
    return path


def load_newest(folder, log=print):
    """(path, checkpoint) of the newest checkpoint in `folder` that loads and passes its checksum.

    Corrupt ones are skipped with one warning line each through `log`.
    """
    for path in list_checkpoints(folder):
        try:
            return path, load(path)
        except (ValueError, OSError) as e:  # truncated, garbled or bit-flipped: fall back to the previous one
            log(f"warning: skipping unreadable checkpoint: {str(e).splitlines()[0][:300]}")
    return None, None
