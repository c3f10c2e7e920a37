"""Robustness sweep files: expand models x adaptation methods x test batches into eval.py cells.

A robustness sweep file names trained run folders, an ImageNet-C layout corruption root, the methods and
test batches B to evaluate, and extra cells (see docs/robustness.md). Every cell's adaptation keys are
checked through configs.AdaptConfig before anything runs. Nothing here starts a process;
scripts/robustness_sweep.py does.
"""
import difflib
import json
import os
import re
from dataclasses import dataclass

import yaml

from configs import AdaptConfig, ConfigError, from_dict, read_yaml
from engine import run_folder
from engine.adapt import BATCH_METHODS, METHODS, USED_BY
from launch import sweep as sweep_files

KEYS = ("name", "runs", "models", "checkpoint", "corruptions", "corruption_list", "severities", "methods",
        "adapt_batch", "adapt", "eval", "extra")
# sweep key -> (AdaptConfig field, eval.py flag, methods that take it, cell-name tag)
ADAPT_KEYS = {
    "adapt_batch": ("batch", "--adapt-batch", USED_BY["batch"], "B"),
    "prior_n": ("prior", "--prior-n", USED_BY["prior"], "N"),
    "tent_lr": ("tent_lr", "--tent-lr", USED_BY["tent_lr"], "lr"),
    "tent_mode": ("tent_mode", "--tent-mode", USED_BY["tent_mode"], ""),
    "tent_switch": ("tent_switch", "--tent-switch", USED_BY["tent_switch"], "switch"),
    "stream_seed": ("seed", "--stream-seed", USED_BY["seed"], "seed"),
}
SHARED_ADAPT = tuple(k for k in ADAPT_KEYS if k != "adapt_batch")   # the `adapt:` section's keys
EVAL_KEYS = {"per_class": "--per-class", "per_domain": "--per-domain", "batch_size": "--batch-size",
             "workers": "--workers"}
CHECKPOINTS = ("best", "last")
NAME = re.compile(r"[\w.+=,@-]+")


class RobustnessError(ValueError):
    """A problem with a robustness sweep file or its options; the message says what to change."""


@dataclass(frozen=True)
class Sweep:
    path: str
    name: str
    runs: str                   # absolute folder of the run folders
    models: dict                # label -> run folder name
    checkpoint: str             # best | last
    corruptions: str            # absolute ImageNet-C layout root
    corruption_list: str
    severities: tuple
    methods: tuple
    adapt_batch: tuple
    adapt: dict                 # shared adaptation keys, applied to the methods that take them
    eval: dict
    extra: tuple                # mappings: model, method and adaptation keys


@dataclass(frozen=True)
class Cell:
    name: str
    model: str                  # the sweep's label
    run_dir: str
    method: str
    adapt: dict                 # sweep adaptation keys this cell passes (adapt_batch, prior_n, ...)
    record: str                 # the result record eval.py writes
    repeats: str = None         # the cell this one repeats with another stream seed (its noise level)

    @property
    def run_name(self):
        """The name --only matches (launch.sweep.select)."""
        return self.name

    def finished(self):
        """The record exists and is a robustness record (eval.py writes it atomically, last)."""
        try:
            with open(self.record) as f:
                return json.load(f).get("kind") == "robustness"
        except (OSError, ValueError, AttributeError):
            return False


# ----- the sweep file ---------------------------------------------------------------------------
def load_sweep(path, settings=()):
    """Read and check a robustness sweep file, top-level keys replaced by `settings` ("key=YAML value", e.g.
    "corruptions=data/x"); every problem is a one-line RobustnessError."""
    path = os.path.abspath(path)
    raw = read_yaml(path, RobustnessError, "robustness sweep file")
    if not isinstance(raw, dict):
        raise RobustnessError(f"{path}: a robustness sweep file must be a mapping with keys {', '.join(KEYS)}")
    for item in settings:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise RobustnessError(f"--set {item}: give KEY=VALUE, e.g. --set corruptions=data/fashion_mnist_c")
        try:
            raw[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise RobustnessError(f"--set {item}: the value is not YAML; quote it") from None
    _known(path, "", raw, KEYS)
    name = raw.get("name", os.path.splitext(os.path.basename(path))[0])
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise RobustnessError(f"{path}: 'name' must be a plain word (letters, digits, . _ - + = ,), got {name!r}")
    for key in ("runs", "corruptions"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise RobustnessError(f"{path}: '{key}' must be a folder path (relative to the current folder), "
                                  f"got {raw.get(key)!r}")
    models = raw.get("models")
    if not isinstance(models, dict) or not models or not all(
            isinstance(k, str) and re.fullmatch(r"\w+", k) and isinstance(v, str) and NAME.fullmatch(v)
            for k, v in models.items()):
        raise RobustnessError(f"{path}: 'models' must map labels (letters, digits, _) to run folder names under "
                              f"'runs', e.g. {{bn: fmnist_bn_1x32}}, got {models!r}")
    checkpoint = raw.get("checkpoint", "best")
    if checkpoint not in CHECKPOINTS:
        raise RobustnessError(f"{path}: 'checkpoint' must be best (best.pt) or last (the newest checkpoint_*.pt), "
                              f"got {checkpoint!r}")
    corruption_list = raw.get("corruption_list", "common")
    if isinstance(corruption_list, list):
        corruption_list = ",".join(map(str, corruption_list))
    if not isinstance(corruption_list, str) or not corruption_list:
        raise RobustnessError(f"{path}: 'corruption_list' must be common, all or a list of corruption names, "
                              f"got {corruption_list!r}")
    severities = raw.get("severities", [1, 2, 3, 4, 5])
    if not isinstance(severities, list) or not severities or not all(
            isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 5 for s in severities):
        raise RobustnessError(f"{path}: 'severities' must be a list of integers from 1 to 5, got {severities!r}")
    methods = raw.get("methods")
    if not isinstance(methods, list) or not methods:
        raise RobustnessError(f"{path}: 'methods' must be a non-empty list among {', '.join(METHODS)}, "
                              f"got {methods!r}")
    for method in methods:
        _method(path, "methods", method)
    batches = raw.get("adapt_batch") or []
    if not isinstance(batches, list) or None in batches:
        raise RobustnessError(f"{path}: 'adapt_batch' must be a list of test batch sizes B, got {batches!r}")
    if any(m in BATCH_METHODS for m in methods) and not batches:
        raise RobustnessError(f"{path}: methods {', '.join(m for m in methods if m in BATCH_METHODS)} need "
                              "'adapt_batch': a list of test batch sizes B, e.g. [128, 16, 2, 1]")
    for b in batches:
        check_adapt(path, "adapt_batch", "batch", {"adapt_batch": b})
    adapt = raw.get("adapt") or {}
    if not isinstance(adapt, dict):
        raise RobustnessError(f"{path}: 'adapt' must map adaptation keys ({', '.join(SHARED_ADAPT)}) to values")
    _known(path, "adapt.", adapt, SHARED_ADAPT)
    for key in adapt:
        check_adapt(path, f"adapt.{key}", ADAPT_KEYS[key][2][0], {key: adapt[key]})
    evals = raw.get("eval") or {}
    if not isinstance(evals, dict):
        raise RobustnessError(f"{path}: 'eval' must map {', '.join(EVAL_KEYS)} to integers (or null)")
    _known(path, "eval.", evals, EVAL_KEYS)
    for key, value in evals.items():
        least = 0 if key == "workers" else 1
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            raise RobustnessError(f"{path}: 'eval.{key}' must be an integer >= {least} or null, got {value!r}")
    extra = raw.get("extra") or []
    if not isinstance(extra, list) or not all(isinstance(e, dict) for e in extra):
        raise RobustnessError(f"{path}: 'extra' must be a list of mappings like {{model: bn, method: batch, "
                              f"adapt_batch: 16, stream_seed: 1}}, got {extra!r}")
    for i, item in enumerate(extra):
        where = f"extra[{i}]"
        _known(path, f"{where}.", item, ("model", "method") + tuple(ADAPT_KEYS))
        if item.get("model") not in models:
            raise RobustnessError(f"{path}: {where}.model must be one of the models ({', '.join(models)}), "
                                  f"got {item.get('model')!r}")
        _method(path, f"{where}.method", item.get("method"))
        keys = {k: v for k, v in item.items() if k in ADAPT_KEYS}
        check_adapt(path, where, item["method"], keys)
    return Sweep(path, name, os.path.abspath(raw["runs"]), dict(models), checkpoint,
                 os.path.abspath(raw["corruptions"]), corruption_list, tuple(severities), tuple(methods),
                 tuple(batches), dict(adapt), {k: v for k, v in evals.items() if v is not None},
                 tuple(dict(e) for e in extra))


def _known(path, prefix, mapping, valid):
    for key in mapping:
        if key not in valid:
            close = difflib.get_close_matches(str(key), list(valid), n=1)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"
            raise RobustnessError(f"{path}: unknown key '{prefix}{key}'; {hint}")


def _method(path, where, method):
    if method not in METHODS:
        raise RobustnessError(f"{path}: {where}: unknown adaptation method {method!r}; choose among "
                              f"{', '.join(METHODS)}")


def check_adapt(path, where, method, keys):
    """The AdaptConfig of `method` with sweep keys `keys`: a key the method does not take, a wrong type or an
    out-of-range value is a one-line RobustnessError, as eval.py would refuse it."""
    for key in keys:
        takes = ADAPT_KEYS[key][2]
        if method not in takes:
            raise RobustnessError(f"{path}: {where}: '{key}' applies to {' or '.join(takes)}, not {method}")
    values = {ADAPT_KEYS[k][0]: v for k, v in keys.items() if v is not None}
    try:
        return from_dict(AdaptConfig, {"method": method, **values}, prefix="adapt")
    except ConfigError as e:
        message = str(e)
        for key, (field, *_rest) in ADAPT_KEYS.items():
            message = message.replace(f"'adapt.{field}'", f"'{key}'")
        raise RobustnessError(f"{path}: {where}: {message}") from None


# ----- cells ------------------------------------------------------------------------------------
def cell_name(model, method, keys):
    """`bn_batch_B16`, `bn_batch_B16_seed1`, `sn_tent_B64_episodic_switch`: model, method, then each key's tag."""
    parts = [model, method]
    for key, (_, _, _, tag) in ADAPT_KEYS.items():
        value = keys.get(key)
        if value is None or value is False:
            continue
        parts.append(tag if value is True else f"{tag}{value:g}" if isinstance(value, float) else f"{tag}{value}")
    return "_".join(parts)


def expand(sweep, out_dir):
    """All cells: for each model, each method (batch methods once per B), then the extra cells.

    The `adapt:` keys go to the methods that take them; an extra cell's own keys win over them and name it."""
    out_dir = os.path.abspath(out_dir)
    planned = []
    for model in sweep.models:
        for method in sweep.methods:
            for b in sweep.adapt_batch if method in BATCH_METHODS else [None]:
                planned.append((model, method, {} if b is None else {"adapt_batch": b}, None))
    for i, item in enumerate(sweep.extra):
        own = {k: v for k, v in item.items() if k in ADAPT_KEYS}
        planned.append((item["model"], item["method"], own, f"extra[{i}]"))
    cells, seen = [], {}
    for model, method, own, where in planned:
        name = cell_name(model, method, own)
        shared = {k: v for k, v in sweep.adapt.items() if method in ADAPT_KEYS[k][2]}
        keys = {**shared, **own}
        # one evaluation under two names (an extra restating a default) is a duplicate too
        for same in (name, (model, repr(check_adapt(sweep.path, f"cell {name}", method, keys)))):
            if same in seen:
                raise RobustnessError(f"{sweep.path}: {where or 'the grid'} repeats cell {seen[same][0]} "
                                      f"({seen[same][1]}); drop the duplicate or change a key")
            seen[same] = (name, where or "the grid")
        reseeded = keys.get("stream_seed", 0) != sweep.adapt.get("stream_seed", 0)
        # the collector counts records of one cell with other stream seeds as duplicates: they go one folder down
        record = os.path.join(out_dir, f"stream_seed{keys['stream_seed']}", f"{name}.json") if reseeded else \
            os.path.join(out_dir, f"{name}.json")
        repeats = cell_name(model, method, {k: v for k, v in own.items() if k != "stream_seed"}) if reseeded else None
        cells.append(Cell(name, model, os.path.join(sweep.runs, sweep.models[model]), method, keys, record,
                          repeats))
    return cells


def select(cells, patterns):
    """Cells whose name matches any of the fnmatch patterns (all cells without patterns), as training sweeps."""
    try:
        return sweep_files.select(cells, patterns)
    except sweep_files.SweepError as e:
        raise RobustnessError(str(e).replace(" run names ", " cells ")) from None


def checkpoint_of(run_dir, which="best"):
    """The run folder's best.pt (best) or newest checkpoint_*.pt (last); a missing one is a RobustnessError."""
    if which == "best":
        path = os.path.join(run_dir, run_folder.BEST_NAME)
        if os.path.isfile(path):
            return path
    else:
        found = run_folder.list_checkpoints(run_dir)
        if found:
            return found[0]
    what = run_folder.BEST_NAME if which == "best" else "checkpoint_*.pt"
    raise RobustnessError(f"no {what} in {run_dir}: train that run first (scripts/sweep.py), or point 'runs' and "
                          "'models' at a trained run folder")


def eval_args(sweep, cell, checkpoint):
    """eval.py's arguments for one cell: the corruption domains, the method and its flags, --json --out."""
    args = [checkpoint, "--corruptions", sweep.corruptions, "--corruption-list", sweep.corruption_list,
            "--severities", ",".join(map(str, sweep.severities)), "--adapt", cell.method]
    for key, (_, flag, _, _) in ADAPT_KEYS.items():
        value = cell.adapt.get(key)
        if value is True:
            args.append(flag)
        elif value is not None and value is not False:
            args += [flag, str(value)]
    for key, value in sweep.eval.items():
        args += [EVAL_KEYS[key], str(value)]
    return args + ["--json", "--out", cell.record]
