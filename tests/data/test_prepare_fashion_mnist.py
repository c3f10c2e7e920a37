"""scripts/prepare_fashion_mnist.py on small IDX files written here, and the real headers when installed."""
import gzip
import importlib.util
import os
import pathlib
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data import ImageFolder

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "prepare_fashion_mnist.py"
REAL = pathlib.Path("/usr/share/datasets/fashion-mnist")
NAMES = ["0_tshirt_top", "1_trouser", "2_pullover", "3_dress", "4_coat",
         "5_sandal", "6_shirt", "7_sneaker", "8_bag", "9_ankle_boot"]


def load_script():
    spec = importlib.util.spec_from_file_location("prepare_fashion_mnist", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prep = load_script()


def write_idx(path, array, magic=None):
    """An IDX file (gzipped if path ends in .gz) written from the format's definition."""
    magic = magic if magic is not None else (0x803 if array.ndim == 3 else 0x801)
    data = struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def make_source(src, n_train=23, n_test=11, rows=5, cols=4):
    """Random non-square images with labels; train gzipped, test plain. Returns {split: (images, labels)}."""
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    splits = {}
    for split, prefix, n, ext in [("train", "train", n_train, ".gz"), ("val", "t10k", n_test, "")]:
        images = rng.integers(0, 256, (n, rows, cols), dtype=np.uint8)
        labels = np.arange(n) % 10
        write_idx(src / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(src / f"{prefix}-labels-idx1-ubyte{ext}", labels)
        splits[split] = images, labels
    return splits


def test_writes_imagefolder_tree_and_skips_when_complete(tmp_path, capsys):
    splits = make_source(tmp_path / "src")
    out = tmp_path / "fm"
    (tmp_path / "fm.tmp" / "junk").mkdir(parents=True)       # an interrupted run is redone
    assert prep.main(["--src", str(tmp_path / "src"), "--out", str(out)]) == 0
    assert "train 23, val 11" in capsys.readouterr().out
    assert not (tmp_path / "fm.tmp").exists() and sorted(os.listdir(out)) == [".complete", "train", "val"]
    for split, (images, labels) in splits.items():
        ds = ImageFolder(out / split)
        assert ds.classes == NAMES and len(ds) == len(labels)
        for i, (image, label) in enumerate(zip(images, labels)):
            path = out / split / NAMES[label] / f"{i:05d}.png"
            with Image.open(path) as png:
                assert png.mode == "L" and np.array_equal(np.array(png), image)
            assert (str(path), label) in ds.samples
    assert prep.main(["--src", str(tmp_path / "missing"), "--out", str(out)]) == 0
    assert "already complete (train 23, val 11)" in capsys.readouterr().out


def run_cli(src, out):
    result = subprocess.run([sys.executable, str(SCRIPT), "--src", str(src), "--out", str(out)],
                            capture_output=True, text=True, timeout=60)
    return result.returncode, result.stderr.strip()


def test_missing_file_is_a_clear_error(tmp_path):
    make_source(tmp_path / "src")
    os.remove(tmp_path / "src" / "t10k-labels-idx1-ubyte")
    code, err = run_cli(tmp_path / "src", tmp_path / "out")
    assert code == 1 and "\n" not in err and "t10k-labels-idx1-ubyte" in err
    assert "apt-get install dataset-fashion-mnist" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["magic", "short", "count"])
def test_damaged_files_are_named(tmp_path, capsys, damage):
    make_source(tmp_path / "src")
    images = np.zeros((11, 5, 4), np.uint8)
    bad = tmp_path / "src" / "t10k-images-idx3-ubyte"
    if damage == "magic":
        write_idx(bad, images, magic=0x801)
    elif damage == "short":
        bad.write_bytes(bad.read_bytes()[:-3])
    else:
        write_idx(bad, np.zeros((12, 5, 4), np.uint8))
    assert prep.main(["--src", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(bad) in err and "apt-get install dataset-fashion-mnist" in err
    assert ("0x00000801" in err) == (damage == "magic")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not REAL.is_dir(), reason="Fashion-MNIST is not installed")
def test_real_headers_parse():
    expected = {"train-images-idx3-ubyte": (60000, 28, 28), "train-labels-idx1-ubyte": (60000,),
                "t10k-images-idx3-ubyte": (10000, 28, 28), "t10k-labels-idx1-ubyte": (10000,)}
    for name, shape in expected.items():
        magic = 0x803 if "images" in name else 0x801
        assert prep.read_idx(prep.find(str(REAL), name), magic, header_only=True) == (shape, None)


def test_train_limit_keeps_the_first_images_and_guards_the_folder(tmp_path, capsys):
    splits = make_source(tmp_path / "src")
    out = tmp_path / "fm_small"
    assert prep.main(["--src", str(tmp_path / "src"), "--out", str(out), "--train-limit", "7"]) == 0
    assert "train 7, val 11" in capsys.readouterr().out
    images, labels = splits["train"]
    kept = sorted(p.name for p in (out / "train").rglob("*.png"))
    assert kept == [f"{i:05d}.png" for i in range(7)]
    with Image.open(out / "train" / NAMES[labels[6]] / "00006.png") as png:
        assert np.array_equal(np.array(png), images[6])
    assert prep.main(["--src", str(tmp_path / "src"), "--out", str(out), "--train-limit", "9"]) == 1
    assert "holds 7 training images, not --train-limit 9" in capsys.readouterr().err
