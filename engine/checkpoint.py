"""Atomic checkpoint files: write-to-temp + fsync + rename, retention, and resume from the newest good one."""
import glob
import io
import json
import os
import re
import tempfile

import torch

from models.checkpoints import load_file as load  # weights_only=True, checksum verified; one-line ValueError
from models.checkpoints import with_checksum

from .run_folder import RunFolderError, storage_message

PATTERN = "checkpoint_{:09d}.pt"
_STEP = re.compile(r"checkpoint_(\d{9})\.pt$")


def atomic_write(path, write):
    """Call write(binary_file) on a temporary file in the same folder, fsync it, rename over `path`.

    An OSError (full disk, read-only folder) becomes a one-line RunFolderError; `path` keeps its old content.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; keep files readable as the umask allows
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise RunFolderError(storage_message(e, path)) from None
        raise


def remove_stale_temporaries(folder):
    """Delete the temporary files of writes that a kill interrupted (only one run writes a folder); return them."""
    stale = sorted(glob.glob(os.path.join(folder, ".tmp-*")))
    for path in stale:
        os.remove(path)
    return stale


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def atomic_json(obj, path):
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


def list_checkpoints(folder):
    """Periodic checkpoints in `folder`, newest (highest global step) first."""
    found = [(int(m.group(1)), p) for p in glob.glob(os.path.join(folder, "checkpoint_*.pt"))
             if (m := _STEP.search(p))]
    return [p for _, p in sorted(found, reverse=True)]


def step_of(path):
    return int(_STEP.search(path).group(1))


def save_periodic(obj, folder, global_step, keep_last):
    """Write checkpoint_<step>.pt (with its content checksum) atomically, then delete older ones beyond
    the newest `keep_last`.

    Files of later steps (an unreadable leftover that resume skipped) are never counted or deleted here.
    A failed write names the newest checkpoint, which is intact.
    """
    path = os.path.join(folder, PATTERN.format(global_step))
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
