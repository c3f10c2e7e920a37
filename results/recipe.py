"""Which runs are replicates: runs whose resolved config.yaml agree on every key that can change the result.

A run's recipe is its config.yaml flattened to dotted keys (missing keys, from an older trainer, take the
schema's default), less the keys placed elsewhere in the table and the keys that cannot change the result:

- placed elsewhere: the table (model.arch/depth/variant/num_classes/width/small_stem, data.root), the column
  (batch.gpus, batch.samples_per_gpu) and the row's normalizer (norm.type);
- train.seed: the replicate axis, over which a cell averages;
- the keys configs/keys.py lists as runtime, bookkeeping and kernel keys (the resume check reads the same lists):
  log.*, checkpoint.*, data.workers (where and how the run wrote and loaded), data.max_bad_images, train.max_iters
  (a run with final.json was not cut short by it, and one without shows no number), norm.impl, train.compile,
  train.channels_last, train.deterministic (other kernels for the same arithmetic, which move the numbers by
  rounding only, as a rerun does);
- norm.using_bn of SN at one sample per GPU: the trainer sets it false whatever was asked (engine/setting.py);
  the run joins the row of its other keys (norm.using_bn=true where the other SN runs differ in it), and its
  cell is marked `*`.

Every other key (lr, epochs, schedule, augmentation, precision, norm.* options, ...) defines the recipe.
"""
import dataclasses

from configs.keys import BOOKKEEPING_KEYS, KERNEL_KEYS, RUNTIME_KEYS, matches
from configs.schema import Config

PLACED = {"model.arch", "model.depth", "model.variant", "model.num_classes", "model.width", "model.small_stem",
          "data.root", "batch.gpus", "batch.samples_per_gpu", "norm.type"}
SECTIONS = ("log.", "checkpoint.")  # every key of these sections, later ones too
IGNORED = SECTIONS + tuple(k for k in RUNTIME_KEYS + BOOKKEEPING_KEYS + KERNEL_KEYS if not matches(k, SECTIONS))
SEED = "train.seed"


def flatten(tree, prefix=""):
    """{"a.b": value} of nested mappings; lists become tuples, so values can be compared and hashed."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = _frozen(value)
    return flat


def _frozen(value):
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):     # inside a list: not a config key of its own
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    return value


DEFAULTS = flatten(dataclasses.asdict(Config()))


def recipe(config):
    """{dotted key: value} of what can change a run's result, from its config.yaml mapping."""
    flat = {**DEFAULTS, **flatten(config)}
    ruled = {"norm.using_bn"} if (flat["norm.type"], flat["batch.samples_per_gpu"]) == ("sn", 1) else set()
    return {key: value for key, value in flat.items()
            if key not in PLACED | {SEED} | ruled and not matches(key, IGNORED)}


def text(value):
    """A value as an override would write it: true, null, [30, 60, 90], 0.1."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, tuple):
        return "[" + ", ".join(text(v) for v in value) + "]"
    return str(value)


def varying(recipes):
    """The keys, sorted, whose values are not the same in all of `recipes`. A key missing from a recipe (the
    ruled norm.using_bn) agrees with any value."""
    values = {}
    for r in recipes:
        for key, value in r.items():
            values.setdefault(key, set()).add(value)
    return sorted(key for key, found in values.items() if len(found) > 1)


def items(recipe, keys):
    """((key, value), ...) of `keys` in `recipe`; a missing key takes the schema's default."""
    return tuple((key, recipe.get(key, DEFAULTS.get(key))) for key in keys)
