"""The configs shipped under configs/, each with its one-line description (a leading comment) and setting."""
import glob
import os
import re

from .loader import ConfigError, load_config, read_yaml

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(ROOT)
_SENTENCE_END = re.compile(r"(?<!Sec)\.(\s+(?=[A-Z(])|$)")


def config_files(root=ROOT):
    """Every YAML file below `root`, sorted by path."""
    return sorted(glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True))


def description(path):
    """The first sentence of the file's leading comment block, or '' when it starts without one."""
    lines = []
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("#").strip())
    text = " ".join(line for line in lines if line)
    end = _SENTENCE_END.search(text)
    return text[:end.start() + 1] if end else text


def summary(path):
    """What the file sets up: 'norm (G, B)' for a training config, 'sweep' or 'robustness sweep' for sweep files."""
    try:
        cfg = load_config(path)
    except ConfigError:
        raw = read_yaml(path)
        if isinstance(raw, dict) and "axes" in raw:
            return "sweep"
        if isinstance(raw, dict) and {"models", "methods"} <= set(raw):
            return "robustness sweep"
        raise
    return f"{cfg.norm.type} ({cfg.batch.gpus}, {cfg.batch.samples_per_gpu})"


def catalog_lines(root=ROOT):
    """One line per config: its path (from the repository root), its summary, its description."""
    rows = [(os.path.relpath(p, REPO), summary(p), description(p)) for p in config_files(root)]
    width = max(len(r[0]) for r in rows)
    kinds = max(len(r[1]) for r in rows)
    return [f"{path:<{width}}  {kind:<{kinds}}  {text}".rstrip() for path, kind, text in rows]
