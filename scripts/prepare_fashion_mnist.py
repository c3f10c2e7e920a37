"""Convert the Fashion-MNIST IDX files into an ImageFolder tree OUT/{train,val}/<class>/<index>.png."""
import argparse
import gzip
import json
import os
import shutil
import struct
import sys
import time

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SRC = "/usr/share/datasets/fashion-mnist"
DEFAULT_OUT = os.path.join(REPO, "data", "fashion_mnist")
# Numbered so that the alphabetical class order ImageFolder uses is the label order.
CLASSES = ["0_tshirt_top", "1_trouser", "2_pullover", "3_dress", "4_coat",
           "5_sandal", "6_shirt", "7_sneaker", "8_bag", "9_ankle_boot"]
SPLITS = {"train": "train", "val": "t10k"}
IMAGES_MAGIC, LABELS_MAGIC = 0x803, 0x801
HINT = "install it with `apt-get install dataset-fashion-mnist` or pass --src DIR"
MARKER = ".complete"


class DatasetError(Exception):
    """A missing or malformed source file; the message is one line."""


def find(src, name):
    """The path of name or name.gz in src."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(src, candidate)
        if os.path.isfile(path):
            return path
    raise DatasetError(f"missing {os.path.join(src, name)}(.gz); {HINT}")


def read_bytes(path, limit=-1):
    """The (decompressed) content of path, or its first limit bytes."""
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            return f.read(limit)
    except (OSError, EOFError) as e:
        raise DatasetError(f"cannot read {path} ({e}); {HINT}") from None


def read_idx(path, magic, header_only=False):
    """(shape, uint8 array or None) of an IDX file after checking its magic number and size."""
    dims = 3 if magic == IMAGES_MAGIC else 1
    head = 4 + 4 * dims
    data = read_bytes(path, head if header_only else -1)
    if len(data) < head:
        raise DatasetError(f"{path}: {len(data)} bytes, too short for an IDX header; {HINT}")
    found, *shape = struct.unpack(f">{1 + dims}I", data[:head])
    if found != magic:
        raise DatasetError(f"{path}: IDX magic 0x{found:08x}, expected 0x{magic:08x}; {HINT}")
    expected = head + int(np.prod(shape))
    if header_only:
        return tuple(shape), None
    if len(data) != expected:
        raise DatasetError(f"{path}: header {tuple(shape)} needs {expected} bytes, file has {len(data)}; {HINT}")
    return tuple(shape), np.frombuffer(data, np.uint8, offset=head).reshape(shape)


def read_split(src, prefix):
    """(images N x H x W, labels N) of one split, checked for matching counts and labels 0..9."""
    ipath, lpath = find(src, f"{prefix}-images-idx3-ubyte"), find(src, f"{prefix}-labels-idx1-ubyte")
    _, images = read_idx(ipath, IMAGES_MAGIC)
    _, labels = read_idx(lpath, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DatasetError(f"{ipath} has {len(images)} images but {lpath} has {len(labels)} labels; {HINT}")
    if len(labels) and labels.max() >= len(CLASSES):
        raise DatasetError(f"{lpath}: label {labels.max()} outside 0..{len(CLASSES) - 1}; {HINT}")
    return images, labels


def write_split(folder, images, labels):
    """Grayscale PNGs folder/<class>/<index>.png; zero-padded names keep the sorted order the index order."""
    for name in CLASSES:
        os.makedirs(os.path.join(folder, name))
    # A plain PIL loop writes ~10k images/s, fast enough that worker processes are not worth their startup.
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image, "L").save(os.path.join(folder, CLASSES[label], f"{i:05d}.png"))


def read_marker(out):
    """The counts recorded by a completed run, or None."""
    try:
        with open(os.path.join(out, MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def prepare(src, out, train_limit=0):
    """Write the tree into out (via out.tmp, renamed when complete); returns (counts, skipped).

    train_limit > 0 keeps only the first train_limit training images (the file's order is already
    class-balanced to within a few percent), for the CPU-sized mini reproduction.
    """
    out = os.path.abspath(out)
    done = read_marker(out)
    if done is not None:
        if train_limit and done.get("train") != train_limit:
            raise DatasetError(f"{out} holds {done.get('train')} training images, not --train-limit {train_limit}; "
                               "choose another --out")
        return done, True
    if os.path.exists(out):
        raise DatasetError(f"{out} exists but has no {MARKER} marker; remove it or choose another --out")
    splits = {split: read_split(src, prefix) for split, prefix in SPLITS.items()}
    if train_limit:
        images, labels = splits["train"]
        splits["train"] = images[:train_limit], labels[:train_limit]
    tmp = out + ".tmp"
    # Left over from an interrupted run: it never got its marker, so it is redone from scratch.
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {}
    for split, (images, labels) in splits.items():
        write_split(os.path.join(tmp, split), images, labels)
        counts[split] = len(labels)
    with open(os.path.join(tmp, MARKER), "w") as f:
        json.dump(counts, f)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    os.rename(tmp, out)
    return counts, False


def main(argv=None):
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", default=DEFAULT_SRC, help="folder with the 4 IDX files, gzipped or plain")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output ImageFolder root (default: data/fashion_mnist)")
    parser.add_argument("--train-limit", type=int, default=0, help="keep only the first N training images")
    args = parser.parse_args(argv)
    start = time.time()
    try:
        counts, skipped = prepare(args.src, args.out, args.train_limit)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = os.path.abspath(args.out)
    summary = ", ".join(f"{split} {n}" for split, n in counts.items())
    if skipped:
        print(f"{out} is already complete ({summary}); nothing to do")
    else:
        print(f"wrote {out}: {summary} images in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
