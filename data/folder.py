"""ImageFolder that survives unreadable files and augments each (seed, epoch, index) reproducibly."""
import os

import torch
import torchvision.transforms.functional as TF
from PIL import Image

from .seeding import cpu_rng_seeded, mix_seed, split_key

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LAYOUT = "expected ImageFolder layout root/<class>/<image>"
# What PIL raises for garbage, truncated or oversized files (UnidentifiedImageError is an OSError).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def _visible(name):
    # Hidden entries are skipped: macOS archives carry "._x.JPEG" resource forks that are not images.
    return not name.startswith(".")


def scan(root):
    """(classes, samples) of root/<class>/**/<image>, both sorted; raises with one line if the layout is wrong."""
    if not os.path.exists(root):
        raise FileNotFoundError(f"{root}: folder not found; {LAYOUT}")
    if not os.path.isdir(root):
        raise ValueError(f"{root}: not a folder; {LAYOUT}")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and _visible(e.name))
    if not classes:
        raise ValueError(f"{root}: no class subfolders; {LAYOUT}")
    samples = []
    for target, name in enumerate(classes):
        files = []
        for folder, dirs, names in os.walk(os.path.join(root, name), followlinks=True):
            dirs[:] = [d for d in dirs if _visible(d)]
            files += [os.path.join(folder, n) for n in names
                      if _visible(n) and os.path.splitext(n)[1].lower() in EXTENSIONS]
        if not files:
            # An empty class folder usually means an incomplete copy; torchvision refuses it too.
            raise ValueError(f"{os.path.join(root, name)}: no images ({' '.join(EXTENSIONS)}); {LAYOUT}")
        samples += [(path, target) for path in sorted(files)]
    return classes, samples


def load_rgb(path):
    """Decode fully and convert to RGB; a truncated file raises because the full decode happens here."""
    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


class ImageFolder(torch.utils.data.Dataset):
    """root/<class>/<image> dataset returning (image, target, bad); bad is the index of a skipped unreadable file or -1."""

    def __init__(self, root, transform=None, seed=0):
        self.root = os.fspath(root)
        self.transform = transform
        self.seed = seed
        self.classes, self.samples = scan(self.root)
        self.targets = [t for _, t in self.samples]

    def __len__(self):
        return len(self.samples)

    def _read(self, index):
        """(image, target, bad) for index or, if it cannot be decoded, for the next readable index."""
        n = len(self.samples)
        for step in range(n):
            path, target = self.samples[(index + step) % n]
            try:
                image = load_rgb(path)
            except DECODE_ERRORS:
                continue
            return image, target, (index if step else -1)
        raise RuntimeError(f"{self.root}: none of the {n} image files could be decoded")

    def __getitem__(self, key):
        index, epoch = split_key(key)
        if not 0 <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for {len(self.samples)} samples")
        image, target, bad = self._read(index)
        if self.transform is None:
            # Still a tensor, so that batches of equal-sized images collate.
            return TF.to_tensor(image), target, bad
        if epoch is None:
            return self.transform(image), target, bad
        # The seed depends on the sample, not on the worker or loading order, so any worker count gives the same batch.
        with cpu_rng_seeded(mix_seed(self.seed, epoch, index)):
            return self.transform(image), target, bad
