"""Shared fault makers for tests: a bit flipped inside a checkpoint's tensor data, a small real file system,
and an independent reader of TensorBoard event files."""
import contextlib
import os
import struct
import subprocess
import zipfile

import pytest


def flip_tensor_byte(path, mask=0x10):
    """Flip bits of one byte in the middle of the largest tensor record of a torch.save zip archive.

    torch stores tensor data uncompressed, so the byte is inside tensor values, not in zip headers.
    """
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= mask
    with open(path, "wb") as f:
        f.write(bytes(data))


@contextlib.contextmanager
def small_disk(path, size, readonly=False):
    """A tmpfs of `size` mounted at `path` for the block (root only; the test skips, saying why, otherwise)."""
    os.makedirs(path, exist_ok=True)
    options = f"size={size}" + (",ro" if readonly else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {'read-only ' if readonly else ''}tmpfs here (needs root): this test needs "
                    f"a real small file system ({mounted.stderr.decode().strip()[:100]})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def read_events(*paths):
    """(tag, step) of every scalar in TFRecord event files, in order; asserts that no torn record is left."""
    from tensorboardX.proto.event_pb2 import Event
    out = []
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            assert pos + 12 + length + 4 <= len(data), f"torn record in {path}"
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            out += [(v.tag, event.step) for v in event.summary.value]
            pos += 12 + length + 4
    return out
