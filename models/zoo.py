"""The model zoo: a validated registry (models/zoo.yaml) of checkpoints, located and sha256-verified before use."""
import difflib
import hashlib
import json
import os
import re

import yaml

from configs import read_yaml

from .checkpoints import check_classes, read_safetensors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGISTRY = os.path.join(REPO, "models", "zoo.yaml")
SOURCES = ("the SN authors", "this repository")
# field: (allowed types, may be null); every field must be present in every entry
FIELDS = {
    "name": ((str,), False),
    "source": ((str,), False),
    "config": ((str,), True),      # YAML config (from the repository root) that builds the model; null: in the file
    "file": ((str,), False),       # file name inside the zoo folder
    "sha256": ((str,), True),      # null: none was published, the file cannot be verified
    "top1": ((int, float), True),  # published (authors) or measured by the trainer's validation (this repository)
    "top5": ((int, float), True),
    "recipe": ((str,), False),
    "url": ((str,), True),         # where to get the file
    "eval": ((str,), False),       # the command that evaluates it
}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
HEADER = """\
# The model zoo registry: one entry per model; read and validated by models/zoo.py, listed in MODEL_ZOO.md.
# scripts/export_zoo.py adds this repository's models; `python eval.py --zoo NAME --data ROOT` evaluates one.
# sha256 null: no hash was published for the file, so eval.py prints the file's hash instead of verifying it.
"""


class ZooError(ValueError):
    """A registry or zoo-file problem, with the entry named and what to do."""


def load_registry(path=REGISTRY):
    """The validated list of entries (dicts) of the registry at `path`."""
    data = read_yaml(path, ZooError, "zoo registry")
    if data is None:
        return []
    if not isinstance(data, dict) or set(data) != {"models"} or not isinstance(data["models"] or [], list):
        raise ZooError(f"{path}: the registry must be a mapping with one key 'models' holding a list of entries")
    entries = data["models"] or []
    seen = set()
    for i, entry in enumerate(entries):
        validate_entry(entry, f"{path}: entry {i + 1}")
        if entry["name"] in seen:
            raise ZooError(f"{path}: entry '{entry['name']}' appears twice; names must be unique")
        seen.add(entry["name"])
    return entries


def validate_entry(entry, where="zoo entry"):
    """Raise a one-line ZooError naming the entry for unknown keys, missing fields or bad values."""
    if not isinstance(entry, dict):
        raise ZooError(f"{where}: must be a mapping of {', '.join(FIELDS)}")
    name = entry.get("name")
    where = f"{where} ('{name}')" if isinstance(name, str) else where
    unknown = [k for k in entry if k not in FIELDS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), list(FIELDS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(FIELDS)}"
        raise ZooError(f"{where}: unknown key '{unknown[0]}'{hint}")
    missing = [k for k in FIELDS if k not in entry]
    if missing:
        raise ZooError(f"{where}: missing field '{missing[0]}' (every entry needs {', '.join(FIELDS)}; "
                       "write null where a value is unknown)")
    for key, (types, nullable) in FIELDS.items():
        value = entry[key]
        if value is None and nullable:
            continue
        if not isinstance(value, types) or isinstance(value, bool):
            expected = " or ".join(t.__name__ for t in types) + (" or null" if nullable else "")
            raise ZooError(f"{where}: '{key}' must be {expected}, got {value!r}")
    checks = (
        (NAME.match(entry["name"]), "'name' may hold only letters, digits and . _ + - (it names the file)"),
        (entry["source"] in SOURCES, f"'source' must be one of {SOURCES}, got {entry['source']!r}"),
        (entry["sha256"] is None or SHA256.match(entry["sha256"]),
         f"'sha256' must be 64 lower-case hex digits or null, got {entry['sha256']!r}"),
        (entry["config"] is not None or entry["source"] == "this repository",
         "'config' may be null only for this repository's files, which carry their config"),
        (os.path.basename(entry["file"]) == entry["file"], "'file' must be a file name, without folders"),
        (all(v is None or 0 <= v <= 100 for v in (entry["top1"], entry["top5"])), "'top1'/'top5' must be in 0..100"),
        (f"--zoo {entry['name']}" in entry["eval"], f"'eval' must contain '--zoo {entry['name']}'"),
    )
    for ok, message in checks:
        if not ok:
            raise ZooError(f"{where}: {message}")


def find(entries, name):
    """The entry called `name`; an unknown name lists the closest ones."""
    for entry in entries:
        if entry["name"] == name:
            return entry
    names = [e["name"] for e in entries]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(names) or 'none'}"
    raise ZooError(f"unknown zoo model '{name}'; {hint}")


def zoo_dir(folder=None):
    """--zoo-dir, else $SN_ZOO_DIR, else ./zoo."""
    return folder or os.environ.get("SN_ZOO_DIR") or "zoo"


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def locate(entry, folder):
    """Path of the entry's file in the zoo folder; a missing file says where to place it and where to get it."""
    path = os.path.join(folder, entry["file"])
    if not os.path.isfile(path):
        origin = entry["url"] or ("scripts/export_zoo.py" if entry["source"] == "this repository" else "its authors")
        raise FileNotFoundError(f"zoo model '{entry['name']}': file not found at {path}; get '{entry['file']}' "
                                f"from {origin} and place it in {folder} (or pass --zoo-dir / set SN_ZOO_DIR)")
    return path


def verify(path, entry, warn=print):
    """Check the file's sha256 against the registry; with no published hash, report the file's hash instead."""
    actual = sha256_file(path)
    if entry["sha256"] is None:
        warn(f"warning: zoo model '{entry['name']}' has no published sha256 to verify {path} against; "
             f"its sha256 is {actual} (compare with a trusted copy; do not trust an unknown file)")
    elif actual != entry["sha256"]:
        raise ZooError(f"zoo model '{entry['name']}': {path} has sha256 {actual}, the registry expects "
                       f"{entry['sha256']}; the file is corrupt or another model: download or export it again")
    return actual


def resolve(name, folder=None, registry=REGISTRY, warn=print):
    """(path, entry) of a verified zoo model."""
    entry = find(load_registry(registry), name)
    path = locate(entry, zoo_dir(folder))
    verify(path, entry, warn)
    return path, entry


def config_path(entry, root=REPO):
    """The entry's config file (relative paths from the repository root), or None when the file carries it."""
    if entry["config"] is None:
        return None
    path = os.path.join(root, entry["config"])
    if not os.path.isfile(path):
        raise ZooError(f"zoo model '{entry['name']}': config {entry['config']} not found under {root}")
    return path


EXPORT_KEY = "export"  # the one metadata key of exported files (files from before classes were recorded: "config")


def export_metadata(config, classes):
    """The .safetensors metadata of an export: its resolved config and class names (or None) under one key.

    One key, JSON with sorted keys: safetensors writes several keys in a random order, and the same export
    must give the same bytes, so the same sha256.
    """
    return {EXPORT_KEY: json.dumps({"classes": classes, "config": config}, sort_keys=True)}


def embedded(path):
    """(config dict or None, class names or None) that scripts/export_zoo.py stored in a .safetensors file."""
    if not str(path).endswith(".safetensors"):
        return None, None
    metadata = read_safetensors(path, tensors=False)
    try:
        if EXPORT_KEY in metadata:
            export = json.loads(metadata[EXPORT_KEY])
            config, classes = export["config"], export["classes"]
        else:
            config, classes = (json.loads(metadata["config"]) if metadata.get("config") else None), None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: unreadable export metadata ({type(e).__name__}: {e}); "
                         "export the checkpoint again with scripts/export_zoo.py") from None
    return config, check_classes(classes, path)


def upsert(entries, entry, force=False):
    """Entries with `entry` added, or replacing the same name in place; a different sha256 needs `force`."""
    validate_entry(entry)
    for i, old in enumerate(entries):
        if old["name"] == entry["name"]:
            if old["sha256"] != entry["sha256"] and not force:
                raise ZooError(f"zoo entry '{entry['name']}' exists with sha256 {old['sha256']}, the new file has "
                               f"{entry['sha256']}; pass --force to replace it, or choose another --name")
            return entries[:i] + [entry] + entries[i + 1:]
    return entries + [entry]


def registry_text(entries):
    """The registry file's text: the header comment and the entries in order."""
    for entry in entries:
        validate_entry(entry)
    body = yaml.safe_dump({"models": [{k: e[k] for k in FIELDS} for e in entries]}, sort_keys=False,
                          allow_unicode=True, width=1000)
    return HEADER + body


def eval_command(name, data="data/imagenet"):
    return f"python eval.py --zoo {name} --data {data}"
