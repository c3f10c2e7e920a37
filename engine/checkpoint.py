"""Atomic checkpoint files: write-to-temp + fsync + rename, retention, and resume from the newest good one."""
import glob
import json
import os
import re
import tempfile
import warnings

import torch

from models.checkpoints import load_file as load  # weights_only=True; one-line ValueError if unreadable

PATTERN = "checkpoint_{:09d}.pt"
_STEP = re.compile(r"checkpoint_(\d{9})\.pt$")


def atomic_write(path, write):
    """Call write(binary_file) on a temporary file in the same folder, fsync it, rename over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; keep files readable as the umask allows
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


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
    """torch.save `obj` to `path` atomically: a crash leaves the previous file or the new one, never half."""
    atomic_write(path, lambda f: torch.save(obj, f))


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
    """Write checkpoint_<step>.pt atomically, then delete older ones beyond the newest `keep_last`.

    Files of later steps (an unreadable leftover that resume skipped) are never counted or deleted here.
    """
    path = os.path.join(folder, PATTERN.format(global_step))
    atomic_save(obj, path)
    for old in [p for p in list_checkpoints(folder) if step_of(p) <= global_step][keep_last:]:
        os.remove(old)
    return path


def load_newest(folder, log=print):
    """(path, checkpoint) of the newest checkpoint in `folder` that loads, skipping corrupt ones."""
    for path in list_checkpoints(folder):
        try:
            return path, load(path)
        except Exception as e:  # a truncated or corrupt file: fall back to the previous one
            message = f"skipping unreadable checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            warnings.warn(message)
            log(f"warning: {message}")
    return None, None
