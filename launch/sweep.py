"""Sweep files: expand their axes into training cells and work out how each cell is launched.

A sweep file names a config template, a run-name template, axes whose product gives the cells, and
overrides for every cell (see docs/cluster.md, "Sweep files"). Nothing here starts a process; scripts/sweep.py does,
with launch/slurm.py's job arrays or scripts/launch.sh.
"""
import fnmatch
import itertools
import os
import re
import shlex
from dataclasses import dataclass, field

import yaml

from configs import ConfigError, load_config, read_yaml
from engine import run_folder

KEYS = ("name", "config", "run_name", "axes", "overrides")
PLACEHOLDER = re.compile(r"\{(\w+)\}")
SETTING = re.compile(r"(\d+)x(\d+)")
RUN_NAME = re.compile(r"[\w.+=,@-]+")
SWEEP_OWNED = ("log.out_dir", "log.name")     # every cell's run folder comes from --out and run_name
SETTING_OWNED = ("batch.gpus", "batch.samples_per_gpu")


class SweepError(ValueError):
    """A problem with a sweep file or the sweep's options; the message says what to change."""


@dataclass(frozen=True)
class Sweep:
    path: str
    name: str
    config: str
    run_name: str
    axes: dict
    overrides: tuple


@dataclass(frozen=True)
class Shape:
    """Resources of one run: nodes x processes per node (one process per GPU on GPU clusters)."""
    nodes: int
    procs_per_node: int

    @property
    def world(self):
        return self.nodes * self.procs_per_node

    def __str__(self):
        return f"{self.nodes}x{self.procs_per_node}"


@dataclass(frozen=True)
class Cell:
    run_name: str
    config: str                 # absolute path
    overrides: tuple            # what train.py gets after --config
    run_dir: str
    values: dict = field(default_factory=dict, compare=False)

    def train_args(self):
        return ["--config", self.config, *self.overrides]

    def final_json(self):
        return os.path.join(self.run_dir, run_folder.FINAL_NAME)

    def finished(self):
        """final.json exists: the trainer wrote it at the end (status finished or diverged)."""
        return os.path.isfile(self.final_json())

    def final_status(self):
        """What final.json says (finished, diverged), or 'unreadable' for a file the collector would refuse."""
        try:
            return run_folder.final_status(run_folder.read_final(self.run_dir)) or "missing"
        except (OSError, ValueError):
            return "unreadable"


# ----- the sweep file ---------------------------------------------------------------------------
def load_sweep(path):
    """Read and check a sweep file; every problem is a one-line SweepError."""
    path = os.path.abspath(path)
    raw = read_yaml(path, SweepError, "sweep file")
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: a sweep file must be a mapping with keys {', '.join(KEYS)}")
    unknown = [k for k in raw if k not in KEYS]
    if unknown:
        raise SweepError(f"{path}: unknown key '{unknown[0]}'; valid keys: {', '.join(KEYS)}")
    for key in ("config", "run_name"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise SweepError(f"{path}: '{key}' must be a non-empty string template, got {raw.get(key)!r}")
    name = raw.get("name", os.path.splitext(os.path.basename(path))[0])
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        raise SweepError(f"{path}: 'name' must be a plain word (letters, digits, . _ - + = ,), got {name!r}")
    axes = _check_axes(path, raw.get("axes") or {})
    overrides = raw.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise SweepError(f"{path}: 'overrides' must be a list of strings like optim.lr=0.2, got {overrides!r}")
    for where, text in [("config", raw["config"]), ("run_name", raw["run_name"])] + \
            [(f"overrides[{i}]", o) for i, o in enumerate(overrides)]:
        for placeholder in PLACEHOLDER.findall(text):
            if placeholder not in axes:
                raise SweepError(f"{path}: placeholder {{{placeholder}}} in {where} names no axis; "
                                 f"axes: {', '.join(axes) or '(none)'}")
    _check_owned(overrides, "setting" in axes, f"{path}: overrides")
    return Sweep(path, name, raw["config"], raw["run_name"], axes, tuple(overrides))


def _check_axes(path, axes):
    if not isinstance(axes, dict):
        raise SweepError(f"{path}: 'axes' must map axis names to lists of values, got {axes!r}")
    for axis, values in axes.items():
        if not isinstance(axis, str) or not re.fullmatch(r"\w+", axis):
            raise SweepError(f"{path}: axis name {axis!r} must be a word (letters, digits, _)")
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: axis '{axis}' must be a non-empty list of values, got {values!r}")
        for value in values:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise SweepError(f"{path}: axis '{axis}' holds {value!r}; values must be strings or numbers")
            if axis == "setting":
                try:
                    parse_setting(value)
                except SweepError as e:
                    raise SweepError(f"{path}: {e}") from None
    return axes


def parse_setting(value):
    """'GxB' -> (G, B): the paper's (#GPUs, samples per GPU)."""
    match = SETTING.fullmatch(str(value))
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        hint = " (YAML read it as a number: quote it)" if isinstance(value, int) else ""
        raise SweepError(f"setting {value!r} is not GxB with positive G and B (e.g. 8x32 = 8 GPUs x 32 "
                         f"samples){hint}")
    return int(match[1]), int(match[2])


def _check_owned(overrides, has_setting, where):
    owned = SWEEP_OWNED + (SETTING_OWNED if has_setting else ())
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key in owned:
            fix = "use --out" if key == "log.out_dir" else \
                "run names come from run_name" if key == "log.name" else "the 'setting' axis sets it"
            raise SweepError(f"{where}: '{item}' sets {key}, which the sweep decides per cell ({fix})")


def _substitute(text, values):
    return PLACEHOLDER.sub(lambda m: str(values[m[1]]), text)


def _yaml_str(text):
    """An override value that YAML reads back as exactly this string (paths and names like '123')."""
    return text if yaml.safe_load(text) == text and "'" not in text else "'" + text.replace("'", "''") + "'"


def expand(sweep, out_dir, extra_overrides=()):
    """All cells, first axis outermost: config, overrides (sweep's, extra, setting, run folder)."""
    _check_owned(extra_overrides, "setting" in sweep.axes, "extra overrides")
    out_dir = os.path.abspath(out_dir)
    cells, seen = [], {}
    names = list(sweep.axes)
    for combo in itertools.product(*sweep.axes.values()):
        values = dict(zip(names, combo))
        run_name = _substitute(sweep.run_name, values)
        if not RUN_NAME.fullmatch(run_name) or run_name.startswith("."):
            raise SweepError(f"run name {run_name!r} must be a plain folder name (letters, digits, . _ - + = , @; "
                             "not starting with '.')")
        if run_name in seen:
            raise SweepError(f"run_name '{sweep.run_name}' gives '{run_name}' for both {seen[run_name]} and "
                             f"{values}; add the missing {{axis}} placeholders")
        seen[run_name] = values
        config = os.path.normpath(os.path.join(os.path.dirname(sweep.path), _substitute(sweep.config, values)))
        if not os.path.isfile(config):
            raise SweepError(f"config file not found: {config} (cell {run_name}, from config: {sweep.config})")
        overrides = [_substitute(o, values) for o in sweep.overrides] + list(extra_overrides)
        if "setting" in values:
            g, b = parse_setting(values["setting"])
            overrides += [f"batch.gpus={g}", f"batch.samples_per_gpu={b}"]
        overrides += [f"log.out_dir={_yaml_str(out_dir)}", f"log.name={_yaml_str(run_name)}"]
        cells.append(Cell(run_name, config, tuple(overrides), os.path.join(out_dir, run_name), values))
    return cells


def select(cells, patterns):
    """Cells whose run name matches any of the fnmatch patterns (all cells without patterns)."""
    if not patterns:
        return list(cells)
    chosen = [c for c in cells if any(fnmatch.fnmatchcase(c.run_name, p) for p in patterns)]
    if not chosen:
        raise SweepError(f"--only {' '.join(patterns)} matches none of the {len(cells)} run names "
                         f"(e.g. {cells[0].run_name})")
    return chosen


def load_cell_config(cell):
    """The cell's resolved Config: checks every cell before anything is launched."""
    try:
        return load_config(cell.config, cell.overrides)
    except ConfigError as e:
        raise SweepError(f"cell {cell.run_name}: {e}") from None


# ----- resources --------------------------------------------------------------------------------
def derive_shape(gpus, gpus_per_node=8, nodes=None, procs_per_node=None):
    """Nodes x processes for a setting with `gpus` GPUs on nodes of `gpus_per_node` GPUs (0: CPU only).

    Default: one process per GPU, on as few nodes as possible. Given nodes/procs_per_node, their product
    must divide `gpus`; every process then emulates gpus/(nodes*procs) GPUs (stat_groups).
    """
    p = gpus_per_node
    if p < 0 or (nodes is not None and nodes < 1) or (procs_per_node is not None and procs_per_node < 1):
        raise SweepError("--gpus-per-node must be >= 0, --nodes and --procs-per-node >= 1")
    if p and nodes is None and procs_per_node is None:
        if gpus <= p:
            return Shape(1, gpus)
        if gpus % p:
            raise SweepError(f"a {gpus}-GPU setting does not fill nodes of {p} GPUs; pass --nodes and "
                             f"--procs-per-node whose product divides {gpus}")
        return Shape(gpus // p, p)
    n = nodes or 1
    k = procs_per_node or (max(1, min(p, gpus // n)) if p else 1)
    if p and k > p:
        raise SweepError(f"--procs-per-node {k} exceeds the {p} GPUs per node (--gpus-per-node)")
    if gpus % (n * k):
        raise SweepError(f"a {gpus}-GPU setting cannot run on {n} node(s) x {k} process(es): the {n * k} processes "
                         f"must divide {gpus} (each emulates {gpus}/{n * k} GPUs); change --nodes/--procs-per-node")
    return Shape(n, k)


def largest_divisor_at_most(n, limit):
    return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


def launch_nproc(config, overrides, visible_gpus=None):
    """scripts/launch.sh's default process count: visible GPUs, capped to the largest divisor of batch.gpus."""
    gpus = load_config(config, overrides).batch.gpus
    if visible_gpus is None:
        import torch
        visible_gpus = torch.cuda.device_count()
    return largest_divisor_at_most(gpus, visible_gpus) if visible_gpus else 1


def command_line(argv, env=None):
    """A copy-pasteable shell line."""
    prefix = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    return " ".join(prefix + [shlex.quote(a) for a in argv])
