"""Config keys grouped by what a change of them does to a run: read by the resume check (engine/resume.py) and
by the collector's replicate test (results/recipe.py), so the two cannot disagree. Entries are dotted keys or
section prefixes ending in '.'; every key not listed defines the experiment."""

# where and how a run writes and loads: changes neither the experiment nor its numbers (a resume: silently)
RUNTIME_KEYS = ("checkpoint.", "log.out_dir", "log.name", "log.tensorboard", "data.workers")
# bookkeeping: when the run prints, and whether it stops early or fails on bad images, not what it computes
BOOKKEEPING_KEYS = ("log.print_every", "train.max_iters", "data.max_bad_images")
# other kernels for the same arithmetic: they move the numbers by rounding only, as a rerun does
KERNEL_KEYS = ("norm.impl", "train.compile", "train.deterministic", "train.channels_last")
# the schedule's length and its evaluations: a resume may change them (the run continues), but two runs that
# differ in them are different recipes
SCHEDULE_KEYS = ("train.epochs", "train.eval_every", "train.recalibrate_batches")


def matches(key, keys):
    """Whether dotted `key` is one of `keys` or lies in one of its sections."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in keys)
