"""A run folder's contract: its file names, config.yaml and final.json (schema-versioned), atomic writes,
its exclusive lock, and the repair of its logs on resume (each step logged exactly once).

Every program that writes or reads a run folder (trainer, checkpoints, sweep, collector, zoo export) goes
through here; nothing in this module needs torch.
"""
import datetime
import errno
import fcntl
import glob
import json
import os
import re
import socket
import struct
import tempfile

import yaml

CONFIG_NAME = "config.yaml"         # the resolved config the run trains with
FINAL_NAME = "final.json"           # written last, once the run has finished or diverged
LOCK_NAME = ".lock"
BEST_NAME = "best.pt"
CHECKPOINT_NAME = "checkpoint_{:09d}.pt"
TEMP_PREFIX = ".tmp-"               # atomic writes in progress; a kill leaves them behind
FINAL_SCHEMA = 1                    # final.json's "schema"; a file without the key is schema 0
_STEP = re.compile(r"checkpoint_(\d{9})\.pt$")


class RunFolderError(ValueError):
    """The run folder cannot be used (held by another run, not writable); one line, exit 2."""


def storage_message(error, what):
    """One line for an OSError met while writing `what`, naming the cause and the fix."""
    if error.errno == errno.ENOSPC:
        return f"no space left on device writing {what}"
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {what}: {os.strerror(error.errno)}; choose a writable log.out_dir"
    return f"cannot write {what}: {error.strerror or error}"


def atomic_write(path, write):
    """Call write(binary_file) on a temporary file in the same folder, fsync it, rename over `path`.

    An OSError (full disk, read-only folder) becomes a one-line RunFolderError; `path` keeps its old content.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=folder)
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


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder):
    """Delete the temporary files of writes that a kill interrupted (only one run writes a folder); return them."""
    stale = sorted(glob.glob(os.path.join(folder, TEMP_PREFIX + "*")))
    for path in stale:
        os.remove(path)
    return stale


# ----- checkpoints' names -----------------------------------------------------------------------
def checkpoint_path(folder, global_step):
    return os.path.join(folder, CHECKPOINT_NAME.format(global_step))


def list_checkpoints(folder):
    """Periodic checkpoints in `folder`, newest (highest global step) first."""
    found = [(int(m.group(1)), p) for p in glob.glob(os.path.join(folder, "checkpoint_*.pt"))
             if (m := _STEP.search(p))]
    return [p for _, p in sorted(found, reverse=True)]


def step_of(path):
    return int(_STEP.search(path).group(1))


# ----- config.yaml and final.json ---------------------------------------------------------------
def write_config(folder, config):
    """Write the resolved config (a plain dict) as config.yaml, atomically."""
    text = yaml.safe_dump(config, sort_keys=False)
    atomic_write(os.path.join(folder, CONFIG_NAME), lambda f: f.write(text.encode()))


def read_config(folder):
    """The parsed config.yaml of a run folder; a malformed file is a one-line RunFolderError."""
    return _read(os.path.join(folder, CONFIG_NAME), yaml.safe_load, "YAML")


def write_final(folder, record):
    """Write final.json, the run's outcome (status, metrics, setting), with the schema version, atomically."""
    text = json.dumps({"schema": FINAL_SCHEMA, **record}, indent=1) + "\n"
    atomic_write(os.path.join(folder, FINAL_NAME), lambda f: f.write(text.encode()))


def read_final(folder):
    """final.json as a dict, or None when the run has not written one (running, stopped or crashed).

    A file without "schema" is schema 0 (the same fields, no version); a newer schema than this code
    knows, or a file that is no JSON object, is a one-line RunFolderError.
    """
    path = os.path.join(folder, FINAL_NAME)
    if not os.path.exists(path):
        return None
    final = _read(path, json.loads, "JSON")
    if not isinstance(final, dict):
        raise RunFolderError(f"{path}: expected a JSON object, got {type(final).__name__}; fix or remove the file")
    schema = final.get("schema", 0)
    if not isinstance(schema, int) or isinstance(schema, bool) or not 0 <= schema <= FINAL_SCHEMA:
        raise RunFolderError(f"{path}: final.json schema {schema!r} is not one this code reads (0 to "
                             f"{FINAL_SCHEMA}); update the repository to read runs of a newer trainer")
    return final


def final_status(final):
    """A final.json's status; files from before the trainer recorded one hold a finished run's metrics."""
    if final is None:
        return None
    return str(final.get("status", "finished" if "top1" in final else "unknown"))


def _read(path, parse, kind):
    try:
        with open(path) as f:
            return parse(f.read())
    except (ValueError, yaml.YAMLError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RunFolderError(f"{path}: not valid {kind} ({first}); fix or remove the file") from None


class RunLock:
    """An exclusive POSIX lock on <run folder>/.lock, held for the life of the process.

    A lock dies with its process (also on SIGKILL), so a stale .lock file of a dead run is simply
    taken over; its recorded holder is reported. POSIX locks (lockf) also work across NFS clients.
    """

    def __init__(self, folder, log=print):
        self.path = os.path.join(folder, LOCK_NAME)
        try:
            os.makedirs(folder, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunFolderError(storage_message(e, f"the run folder {folder}")) from None
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self._holder() or "another process"
            os.close(self._fd)
            raise RunFolderError(f"run folder {folder} is in use by another run ({holder}); wait for it to "
                                 "finish, stop it, or give this run another log.name") from None
        previous = self._holder()
        if previous:
            log(f"note: took over the lock of {self.path} left by a run that is no longer running ({previous})")
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(self._fd)

    def _holder(self):
        try:
            info = json.loads(os.pread(self._fd, 4096, 0) or b"null")
            return f"pid {info['pid']} on {info['host']} since {info['since']}"
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def release(self):
        """Empty the file (a clean exit leaves no holder to report) and drop the lock."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor releases the lock
        self._fd = None


def truncate_jsonl(path, last_step):
    """Keep the rows of a metrics.jsonl with step <= last_step; drop later ones and a torn last line."""
    if not os.path.exists(path):
        return 0
    kept, dropped = [], 0
    with open(path, "rb") as f:
        for line in f:
            try:
                row = json.loads(line)
                keep = line.endswith(b"\n") and row["step"] <= last_step
            except (ValueError, KeyError, TypeError):
                keep = False
            if keep:
                kept.append(line)
            else:
                dropped += 1
    if dropped:
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return dropped


def truncate_events(path, last_step):
    """Cut a TensorBoard event file before its first record of a step > last_step or its first torn record.

    Event files are TFRecord streams (length, crc, payload, crc) written in step order, so the prefix
    up to that record holds every step <= last_step once. Returns the number of bytes removed.
    """
    from tensorboardX.proto.event_pb2 import Event
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos + 12 <= size:
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        end = pos + 12 + length + 4
        if end > size:
            break
        try:
            event = Event.FromString(data[pos + 12:pos + 12 + length])
        except Exception:  # a torn or garbled record: nothing after it is trusted
            break
        if event.step > last_step and not event.HasField("file_version"):
            break
        pos = end
    if pos < size:
        with open(path, "r+b") as f:
            f.truncate(pos)
            f.flush()
            os.fsync(f.fileno())
    return size - pos
