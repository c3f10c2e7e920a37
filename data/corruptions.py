"""Corrupted copies of an image folder in the ImageNet-C layout ROOT/<corruption>/<severity>/<class>/<image>:
a reader of the domains and a deterministic generator (imagecorruptions, an optional install)."""
import dataclasses
import hashlib
import json
import multiprocessing
import os
import time

import numpy as np
from PIL import Image

from . import corruption_names as names
from .folder import ImageFolder, load_rgb, scan
from .seeding import mix_seed

LAYOUT = "expected ImageNet-C layout ROOT/<corruption>/<severity>/<class>/<image>"
MANIFEST = "corruptions.json"
MIN_SIZE = 32           # imagecorruptions refuses images under 32 px on a side
INSTALL = ("generating corruptions needs the optional packages: pip install -r requirements-corruptions.txt "
           "-c constraints.txt (or bash scripts/setup.sh -r requirements-corruptions.txt)")
# Corruptions that take their random numbers from a seed= argument besides numpy's global generator.
SEEDED = {"impulse_noise", "glass_blur"}
# Manifest entries that fix what a file holds: a rerun with other values would mix two datasets.
PARAMETERS = ("source", "source_files", "seed", "min_size", "package", "per_class", "limit")
PROGRESS_SECONDS = 60   # a line at least this often within a long domain
TMP = ".tmp-"           # hidden temporary names: the readers skip names that start with "."


@dataclasses.dataclass(frozen=True)
class Domain:
    """One corruption at one severity: the ImageFolder at `path`."""
    corruption: str
    severity: int
    path: str


def _folders(path):
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def parse_corruptions(text):
    """Corruption names from 'common', 'all' or a comma-separated list (the command lines' --corruptions)."""
    groups = {"common": names.COMMON, "extra": names.EXTRA, "all": names.ALL}
    chosen = []
    for word in (w.strip() for w in text.split(",")):
        for name in groups.get(word, (word,)):
            if name and name not in chosen:
                chosen.append(name)
    if not chosen:
        raise ValueError(f"--corruptions {text!r}: no names; give 'common', 'all' or names such as gaussian_noise,fog")
    return chosen


def parse_severities(text):
    """Severities from a comma-separated list such as '1,3,5' (the command lines' --severities)."""
    try:
        values = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise ValueError(f"--severities {text!r}: not integers; give e.g. 1,2,3,4,5") from None
    return check_severities(values)


def check_severities(values):
    """The severities sorted, after checking each is one of names.SEVERITIES."""
    values = [int(v) for v in values]
    bad = [v for v in values if v not in names.SEVERITIES]
    if bad or not values:
        raise ValueError(f"severity {bad[0] if bad else 'list empty'}: severities are "
                         f"{','.join(map(str, names.SEVERITIES))}")
    return sorted(set(values))


def _completed(root):
    """The set of (corruption, severity) a generator finished under root, or None without its manifest."""
    path = os.path.join(root, MANIFEST)
    if not os.path.exists(path):
        return None
    return {(c, s) for c, s in _read_manifest(path)["completed"]}


def _default_corruptions(root, present, log):
    """The common corruptions present under root; the other folders noted and left out."""
    chosen = [c for c in names.COMMON if c in present]
    if not chosen:
        raise ValueError(f"{root}: none of the {len(names.COMMON)} common corruptions ({', '.join(names.COMMON)}) "
                         f"is there; ask for others by name or make them with scripts/make_corruptions.py; {LAYOUT}")
    others = [c for c in present if c not in chosen]
    if others and log:
        log(f"note: {root}: left out {', '.join(others)} (not among the common corruptions; ask for them by name)")
    return chosen


def _severity_folders(root, corruption, severities, log):
    """The severities of root/corruption: those asked for (each must be there) or every one present."""
    folder = os.path.join(root, corruption)
    if severities is not None:
        for s in severities:
            if not os.path.isdir(os.path.join(folder, str(s))):
                raise FileNotFoundError(f"{os.path.join(folder, str(s))}: severity folder not found; make it with "
                                        f"scripts/make_corruptions.py or leave out severity {s}; {LAYOUT}")
        return list(severities)
    present = _folders(folder)
    found = [s for s in names.SEVERITIES if str(s) in present]
    others = [f for f in present if f not in {str(s) for s in found}]
    if others and log:
        log(f"note: {folder}: left out {', '.join(others)} (severity folders are named 1..5)")
    if not found:
        raise ValueError(f"{folder}: no severity folders 1..5; {LAYOUT}")
    return found


def find_domains(root, corruptions=None, severities=None, log=None):
    """The domains under root: `corruptions` in their order (default: the common ones present), severities
    ascending (default: those present); raises with one line when a folder asked for is missing.

    Folders that are not among names.ALL are read only when named in `corruptions` (custom corruptions);
    `log`, if given, receives a `note:` line for each folder left out. With a generator's manifest in root, a
    domain it has not finished is an error rather than a partial test set.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: folder not found; {LAYOUT}")
    present = _folders(root)
    if corruptions is None:
        corruptions = _default_corruptions(root, present, log)
    corruptions = [corruptions] if isinstance(corruptions, str) else list(corruptions)
    for c in corruptions:
        if corruptions.count(c) > 1:
            raise ValueError(f"corruption {c} asked for twice; name each once")
        if c not in present:
            if c not in names.ALL:
                raise ValueError(f"unknown corruption {c!r} and no folder {os.path.join(root, c)}; the known ones are "
                                 f"{', '.join(names.ALL)}")
            raise FileNotFoundError(f"{os.path.join(root, c)}: corruption folder not found; make it with "
                                    f"scripts/make_corruptions.py or leave out {c}; {LAYOUT}")
    if severities is not None:
        severities = check_severities(severities)
    completed = _completed(root)
    domains = []
    for c in corruptions:
        for s in _severity_folders(root, c, severities, log):
            path = os.path.join(root, c, str(s))
            if completed is not None and (c, s) not in completed:
                raise ValueError(f"{path}: not finished ({os.path.join(root, MANIFEST)} does not list it); rerun "
                                 "scripts/make_corruptions.py with the same arguments to finish it")
            domains.append(Domain(c, s, path))
    return domains


def _check_count(value, what):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{what} {value!r}: give a whole number >= 1 (or none for every image)")


def kept_indices(targets, per_class=None, limit=None):
    """Indices of the first `per_class` samples of each class, then the first `limit` of those (sorted order)."""
    _check_count(per_class, "per_class")
    _check_count(limit, "limit")
    counts = {}
    kept = []
    for index, target in enumerate(targets):
        counts[target] = counts.get(target, 0) + 1
        if per_class is None or counts[target] <= per_class:
            kept.append(index)
    return kept[:limit]


class DomainFolder(ImageFolder):
    """The ImageFolder of a domain, optionally cut to its first images: `.classes` stays every class folder."""

    def __init__(self, root, transform=None, per_class=None, limit=None):
        super().__init__(root, transform)
        self.samples = [self.samples[i] for i in kept_indices(self.targets, per_class, limit)]
        self.targets = [t for _, t in self.samples]


def domain_dataset(domain, transform, per_class=None, limit=None):
    """The dataset of a domain returning (image, target, bad), cut to per_class/limit images (sorted order)."""
    return DomainFolder(domain.path, transform, per_class, limit)


# ---- generator ----

def corrupt_function():
    """imagecorruptions.corrupt, or ImportError with the install line."""
    try:
        from imagecorruptions import corrupt
    except ImportError as e:
        raise ImportError(f"{INSTALL} ({e})") from None
    return corrupt


def _package_version():
    from importlib import metadata
    try:
        return f"imagecorruptions-imaug {metadata.version('imagecorruptions-imaug')}"
    except metadata.PackageNotFoundError:
        return "imagecorruptions (version unknown)"


def image_seed(seed, corruption, severity, index):
    """The numpy seed (< 2**32) of one output image: the same whatever else is generated, in any order."""
    return mix_seed(seed, names.ALL.index(corruption), severity, index) % 2 ** 32


def _grown(image, min_size):
    """The image scaled up (bilinear) so its shorter side is min_size, or itself if it is large enough."""
    w, h = image.size
    if min(w, h) >= min_size:
        return image
    scale = min_size / min(w, h)
    size = (max(min_size, round(w * scale)), max(min_size, round(h * scale)))
    return image.resize(size, Image.BILINEAR)


def corrupt_image(source, corruption, severity, seed, min_size=MIN_SIZE):
    """(corrupted uint8 H x W x 3 array, source size, size corrupted) of one image file, seeded by `seed`."""
    corrupt = corrupt_function()
    image = load_rgb(source)
    grown = _grown(image, min_size)
    np.random.seed(seed)
    extra = {"seed": seed} if corruption in SEEDED else {}
    pixels = corrupt(np.asarray(grown), corruption_name=corruption, severity=severity, **extra)
    return pixels, image.size, grown.size


def _write_png(pixels, path):
    """Write pixels to path atomically: a temporary name in its folder, then os.replace."""
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f"{TMP}{os.getpid()}-{name}")
    try:
        Image.fromarray(pixels).save(tmp, "PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _task(job):
    """Corrupt and write one image (a Pool task); returns its (source size, size corrupted)."""
    source, out, corruption, severity, seed, min_size = job
    pixels, size, used = corrupt_image(source, corruption, severity, seed, min_size)
    _write_png(pixels, out)
    return size, used


def _read_manifest(path):
    try:
        with open(path) as f:
            manifest = json.load(f)
        missing = [k for k in PARAMETERS + ("completed",) if k not in manifest]
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable manifest ({e}); remove it only if the folder is to be remade") from None
    if missing:
        raise ValueError(f"{path}: manifest lacks {', '.join(missing)}; remove it only if the folder is to be remade")
    return manifest


def _write_manifest(path, manifest):
    tmp = os.path.join(os.path.dirname(path), TMP + os.path.basename(path))
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def _open_manifest(out_root, parameters):
    """The manifest of out_root, made if new; one line if it records other parameters or out_root is foreign."""
    path = os.path.join(out_root, MANIFEST)
    if not os.path.exists(path):
        if os.path.isdir(out_root) and any(not n.startswith(".") for n in os.listdir(out_root)):
            raise ValueError(f"{out_root}: holds files but no {MANIFEST}; give a new or empty output folder")
        manifest = dict(parameters, completed=[])
        os.makedirs(out_root, exist_ok=True)
        _write_manifest(path, manifest)
        return manifest
    manifest = _read_manifest(path)
    for key in PARAMETERS:
        if manifest[key] != parameters[key]:
            raise ValueError(f"{path}: made with {key}={manifest[key]!r}, not {parameters[key]!r}; use another "
                             "output folder, or the same arguments to resume or add domains")
    return manifest


def _jobs(samples, classes, source, domain_path, corruption, severity, seed, min_size):
    """The (source, out, ...) tasks of one domain for the samples still to be written; (index, job) pairs."""
    jobs = []
    for index, (path, target) in samples:
        relative = os.path.relpath(path, os.path.join(source, classes[target]))
        out = os.path.join(domain_path, classes[target], os.path.splitext(relative)[0] + ".png")
        if not os.path.exists(out):
            jobs.append((path, out, corruption, severity, image_seed(seed, corruption, severity, index), min_size))
    return jobs


def _listing(samples, source):
    """The count and a digest of the source's sorted files: the images' seeds are their indices in that list."""
    digest = hashlib.blake2b("\n".join(os.path.relpath(p, source) for p, _ in samples).encode(), digest_size=6)
    return f"{len(samples)} files, digest {digest.hexdigest()}"


def _check_names(samples, classes, source):
    """Raise if two source images would be written to one output file (same stem, other extensions)."""
    seen = {}
    for _, (path, target) in samples:
        key = (target, os.path.splitext(os.path.relpath(path, source))[0])
        if key in seen:
            raise ValueError(f"{seen[key]} and {path} would both be written as {key[1]}.png; rename one")
        seen[key] = path


def _clean_temporaries(folder):
    for parent, _, files in os.walk(folder):
        for name in files:
            if name.startswith(TMP):
                os.remove(os.path.join(parent, name))


def _resize_note(resized, min_size):
    if not resized:
        return None
    pairs = sorted({pair for pair in resized.values()})
    shown = ", ".join(f"{a[0]}x{a[1]} to {b[0]}x{b[1]}" for a, b in pairs[:3]) + (" ..." if len(pairs) > 3 else "")
    return (f"note: resized {len(resized)} images from {shown} before corrupting (bilinear; imagecorruptions needs "
            f">= {min_size} px)")


def _warm_up(corruptions):
    """Compile glass_blur's numba kernel once here, so that forked workers do not each compile it."""
    if "glass_blur" in corruptions:
        corrupt_function()(np.zeros((MIN_SIZE, MIN_SIZE, 3), np.uint8), corruption_name="glass_blur", severity=1,
                            seed=0)


def generate(source, out_root, corruptions, severities, seed=0, min_size=MIN_SIZE, per_class=None, limit=None,
             progress=None, workers=1):
    """Write corrupted PNG copies of the ImageFolder `source` as out_root/<corruption>/<severity>/<class>/<stem>.png.

    Each image is seeded by image_seed(seed, corruption, severity, its index in the sorted source), so the
    output does not depend on order, workers, or the other domains asked for. Existing files are kept (a rerun
    resumes); out_root/corruptions.json records the parameters and the finished domains. Returns the notes.
    """
    say = progress or (lambda line: None)
    corruptions = [corruptions] if isinstance(corruptions, str) else list(corruptions)
    unknown = [c for c in corruptions if c not in names.ALL]
    if unknown:
        raise ValueError(f"unknown corruption {unknown[0]!r}; the known ones are {', '.join(names.ALL)}")
    severities = check_severities(severities)
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < MIN_SIZE:
        raise ValueError(f"min_size {min_size!r}: imagecorruptions needs images of at least {MIN_SIZE} px")
    _check_count(workers, "workers")
    real_source = os.path.realpath(source)
    if os.path.commonpath([os.path.realpath(out_root), real_source]) == real_source:
        raise ValueError(f"{out_root}: inside the source {source}, whose class folders it would join; write elsewhere")
    classes, samples, notes = scan(source)
    indexed = [(i, samples[i]) for i in kept_indices([t for _, t in samples], per_class, limit)]
    _check_names(indexed, classes, source)
    corrupt_function()
    parameters = {"source": real_source, "source_files": _listing(samples, source), "seed": seed,
                  "min_size": min_size, "package": _package_version(), "per_class": per_class, "limit": limit}
    manifest = _open_manifest(os.fspath(out_root), parameters)
    notes = [f"note: {line}" for line in notes]
    for line in notes:
        say(line)
    resized = {}
    domains = [(c, s) for c in corruptions for s in severities]
    start = time.perf_counter()
    if workers > 1:
        _warm_up(corruptions)
    with multiprocessing.Pool(workers) if workers > 1 else _Serial() as pool:
        for n, (corruption, severity) in enumerate(domains, 1):
            path = os.path.join(out_root, corruption, str(severity))
            _clean_temporaries(path)
            jobs = _jobs(indexed, classes, source, path, corruption, severity, seed, min_size)
            began = last = time.perf_counter()
            for k, (job, (size, used)) in enumerate(zip(jobs, pool.imap(_task, jobs, chunksize=4)), 1):
                if size != used:
                    resized[job[0]] = (size, used)
                if time.perf_counter() - last > PROGRESS_SECONDS:
                    last = time.perf_counter()
                    say(f"{n}/{len(domains)} {corruption}/{severity}: {k}/{len(jobs)} written")
            if [corruption, severity] not in manifest["completed"]:
                manifest["completed"].append([corruption, severity])
                _write_manifest(os.path.join(out_root, MANIFEST), manifest)
            say(f"{n}/{len(domains)} {corruption}/{severity}: wrote {len(jobs)}, kept {len(indexed) - len(jobs)} "
                f"present ({time.perf_counter() - began:.1f} s)")
    note = _resize_note(resized, min_size)
    if note:
        notes.append(note)
        say(note)
    say(f"done: {len(domains)} domains of {len(indexed)} images in {out_root} ({time.perf_counter() - start:.1f} s)")
    return notes


class _Serial:
    """A one-process stand-in for multiprocessing.Pool (imap only)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap(self, function, jobs, chunksize=1):
        return map(function, jobs)
