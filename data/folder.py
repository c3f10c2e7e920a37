"""ImageFolder that follows symlinks safely, survives unreadable files and augments each (seed, epoch, index)
reproducibly."""
import collections
import os
import stat

import torch
import torchvision.transforms.functional as TF
from PIL import Image

from .seeding import cpu_rng_seeded, mix_seed, split_key

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LAYOUT = "expected ImageFolder layout root/<class>/<image>"
# What PIL raises for garbage, truncated or oversized files (UnidentifiedImageError is an OSError).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
# Where a class's image file was found; of several names for one real file the lowest rank is kept.
OWN, LINKED, FILE_LINK = 0, 1, 2    # in the class's own tree, in a folder reached by a symlink, a file symlink


def _visible(name):
    # Hidden entries are skipped: macOS archives carry "._x.JPEG" resource forks that are not images.
    return not name.startswith(".")


def _identity(status):
    return status.st_dev, status.st_ino


def _inside(path, folder):
    """Whether the real path `path` is `folder` or lies below it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _tree_order(path):
    # Component-wise order puts every folder right before the folders below it ("/a", "/a/x", "/a-b").
    return path.split(os.sep)


def _check_distinct(folders, reals):
    """Raise if two class folders resolve to one folder or one holds the other: their images would count twice."""
    pairs = sorted(zip(reals, folders), key=lambda p: _tree_order(p[0]))
    for (real_a, a), (real_b, b) in zip(pairs, pairs[1:]):
        if _inside(real_b, real_a):
            raise ValueError(f"{a} and {b} are one folder or one holds the other (through symlinks); "
                             f"give each class a folder of its own; {LAYOUT}")


class _Walk:
    """Image files under the class folders of one split, following symlinks safely.

    Within a class each real folder is walked once and each real file (by st_dev, st_ino) counted once: the
    class's own tree first, so its files keep their real names, then the folders its symlinks lead to. A
    symlink that is broken, that leads to a folder holding the split or a class folder (a loop), or that
    leads into another class's folder (whose images are labelled there) is skipped and recorded in `skipped`.
    """

    def __init__(self, root, classes):
        self.folders = [os.path.join(root, name) for name in classes]
        self.reals = [os.path.realpath(f) for f in self.folders]
        self.real_root = os.path.realpath(root)
        self.classes = classes
        self.owners = {real: target for target, real in enumerate(self.reals)}
        self.folder_owners = {}     # folder that file symlinks point into -> owner() of its realpath
        self.skipped = {}           # reason -> paths

    def skip(self, path, reason):
        self.skipped.setdefault(reason, []).append(path)
        return False

    def files(self, target):
        """Sorted image paths of class `target`."""
        self.seen = set()           # (st_dev, st_ino) of the folders walked for this class
        self.found = []             # (rank, path, (st_dev, st_ino)) of every image file, rank: names kept first
        self.links = collections.deque()    # symlinked folders met, walked after the class's own tree
        self.walk(self.folders[target], target, OWN)
        while self.links:
            link = self.links.popleft()
            if self.follow_folder(link, os.path.realpath(link), target):
                self.walk(link, target, LINKED)
        found = sorted(self.found)
        if found and found[-1][0] == FILE_LINK:
            # Plain files carry the listing's inode, links stat()'s; they can differ (overlayfs): compare stat()'s.
            found = [(rank, path, key if rank == FILE_LINK else _identity(os.stat(path))) for rank, path, key in found]
        kept, keys = [], set()
        for _, path, key in found:
            if key in keys:
                self.skip(path, "another link to a file already counted in this class, skipped")
            else:
                keys.add(key)
                kept.append(path)
        return sorted(kept)

    def owner(self, real):
        """Index of the class folder holding the real path `real`, or None (outside every class)."""
        parts = real.split(os.sep)
        for n in range(len(parts), 0, -1):
            target = self.owners.get(os.sep.join(parts[:n]))
            if target is not None:
                return target
        return None

    def follow_folder(self, path, real, target):
        """Whether the folder symlink `path` (to `real`) may be walked for class `target`; records why not."""
        if _inside(self.real_root, real):
            return self.skip(path, "symlink to a folder that contains the split, skipped")
        for name, real_class in zip(self.classes, self.reals):
            if real != real_class and _inside(real_class, real):
                return self.skip(path, f"symlink to a folder that contains class folder {name}, skipped")
        # A link to this class's own folder or below is a loop that walk() finds among the folders seen.
        return self.follow(path, self.owner(real), target)

    def follow(self, path, owner, target):
        """Whether the symlink `path`, into the folder of class `owner` (None: no class), may be followed."""
        if owner is None or owner == target:
            return True
        return self.skip(path, f"symlink into class folder {self.classes[owner]}, whose images are counted there, "
                               "skipped")

    def file_owner(self, path):
        """owner() of the file that symlink `path` leads to, resolving each target folder once: a dataset may be
        a million links into one pool folder."""
        target = os.path.join(os.path.dirname(path), os.readlink(path))
        if os.path.islink(target):          # a chain of links: resolve it whole
            return self.owner(os.path.realpath(path))
        folder = os.path.dirname(target)
        if folder not in self.folder_owners:
            self.folder_owners[folder] = self.owner(os.path.realpath(folder))
        return self.folder_owners[folder]

    def walk(self, top, target, rank):
        """Add the image files of the tree at `top` to self.found; symlinked folders go to self.links."""
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                status = os.stat(folder)
                entries = list(os.scandir(folder))
            except OSError as error:
                self.skip(folder, f"unreadable folder ({error.strerror}), skipped")
                continue
            if _identity(status) in self.seen:
                self.skip(folder, "symlink loop to an already visited folder, skipped")
                continue
            self.seen.add(_identity(status))
            for entry in entries:
                if _visible(entry.name):
                    self.entry(entry, status.st_dev, target, rank, stack)

    def entry(self, entry, device, target, rank, stack):
        """File an entry of a folder on `device`: a subfolder onto `stack`, an image into found, a folder link into
        links."""
        image = os.path.splitext(entry.name)[1].lower() in EXTENSIONS
        if not entry.is_symlink():
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif image and entry.is_file(follow_symlinks=False):
                # The inode comes with the folder listing, so plain files cost no stat call.
                self.found.append((rank, entry.path, (device, entry.inode())))
            return
        try:
            status = os.stat(entry.path)
        except OSError:
            self.skip(entry.path, "broken symlink, skipped")
            return
        if stat.S_ISDIR(status.st_mode):
            self.links.append(entry.path)
        elif image and stat.S_ISREG(status.st_mode) and self.follow(entry.path, self.file_owner(entry.path), target):
            self.found.append((FILE_LINK, entry.path, _identity(status)))

    def notes(self, root):
        """One line per reason: the first path (relative to the split's parent), how many more, why."""
        base = os.path.dirname(os.path.abspath(root))
        lines = []
        for reason, paths in self.skipped.items():
            first = os.path.relpath(os.path.abspath(min(paths)), base)
            more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
            lines.append(f"{first}{more}: {reason}")
        return sorted(lines)


def scan(root):
    """(classes, samples, notes) of root/<class>/**/<image>; classes and samples sorted, notes say what was
    skipped and why (see _Walk); raises with one line if the layout is wrong."""
    if not os.path.exists(root):
        raise FileNotFoundError(f"{root}: folder not found; {LAYOUT}")
    if not os.path.isdir(root):
        raise ValueError(f"{root}: not a folder; {LAYOUT}")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and _visible(e.name))
    if not classes:
        raise ValueError(f"{root}: no class subfolders; {LAYOUT}")
    walk = _Walk(root, classes)
    _check_distinct(walk.folders, walk.reals)
    samples = []
    for target, folder in enumerate(walk.folders):
        files = walk.files(target)
        if not files:
            # An empty class folder usually means an incomplete copy; torchvision refuses it too.
            raise ValueError(f"{folder}: no images ({' '.join(EXTENSIONS)}); {LAYOUT}")
        samples += [(path, target) for path in files]
    return classes, samples, walk.notes(root)


def load_rgb(path):
    """Decode fully and convert to RGB; a truncated file raises because the full decode happens here."""
    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


class ImageFolder(torch.utils.data.Dataset):
    """root/<class>/<image> dataset returning (image, target, bad); bad is the index of a skipped unreadable file or -1.

    `notes` lists, one line per reason, what the scan skipped: broken symlinks, symlink loops, links into other
    classes, second names of one file.
    """

    def __init__(self, root, transform=None, seed=0):
        self.root = os.fspath(root)
        self.transform = transform
        self.seed = seed
        self.classes, self.samples, self.notes = scan(self.root)   # notes: what the scan skipped, and why
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
