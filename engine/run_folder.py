"""A run folder's exclusive lock and the repair of its logs on resume (each step logged exactly once)."""
import datetime
import errno
import fcntl
import json
import os
import socket
import struct

LOCK_NAME = ".lock"


class RunFolderError(ValueError):
    """The run folder cannot be used (held by another run, not writable); one line, exit 2."""


def storage_message(error, what):
    """One line for an OSError met while writing `what`, naming the cause and the fix."""
    if error.errno == errno.ENOSPC:
        return f"no space left on device writing {what}"
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {what}: {os.strerror(error.errno)}; choose a writable log.out_dir"
    return f"cannot write {what}: {error.strerror or error}"


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
