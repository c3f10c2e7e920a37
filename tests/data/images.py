"""Small image files written with PIL for the data tests."""
import numpy as np
from PIL import Image


def write_image(path, seed, size=(40, 30), mode="RGB", fmt="JPEG"):
    """A random-noise image (distinct per seed) at path; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "CMYK": 4, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path, fmt)
    return path


def write_truncated(path, seed):
    """A valid JPEG cut in half: PIL identifies it but fails to decode it."""
    write_image(path, seed, size=(64, 48))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def make_folder(root, classes=("cat", "ant", "bee"), per_class=4):
    """root/<class>/<i>.jpg with per_class noise images each; returns root."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / f"{i}.jpg", seed=100 * c + i)
    return root
