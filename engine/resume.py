"""What resuming may change, what a training checkpoint must hold, and each rank's own running statistics."""
import torch

from .run_folder import RunFolderError

# Keys that neither define the experiment nor change its trajectory: changed silently.
RUNTIME_KEYS = ("checkpoint.", "log.out_dir", "log.name", "log.tensorboard", "data.workers")
# Keys of the schedule and the bookkeeping: a change is allowed and reported, the experiment stays the same.
SCHEDULE_KEYS = ("train.epochs", "train.max_iters", "train.eval_every", "train.recalibrate_batches",
                 "train.compile", "train.deterministic", "train.channels_last", "log.print_every",
                 "data.max_bad_images")
# Every other key (model.*, norm.*, batch.*, optim.*, schedule.*, data.root and the transforms,
# train.seed, train.precision, train.label_smoothing) defines the experiment: a change is refused.

TRAINING_KEYS = ("model", "optimizer", "epoch", "step_in_epoch", "global_step", "world", "rng")


def changed_keys(saved, current, prefix=""):
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b, path = saved.get(key), current.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_keys(a, b, path + ".")
        elif a != b:
            out.append(path)
    return out


def check_config_change(saved, current, run_dir):
    """Raise for changed experiment keys; return the changed schedule keys (to report)."""
    changed = [k for k in changed_keys(saved or {}, current) if not k.startswith(RUNTIME_KEYS)]
    defining = [k for k in changed if not k.startswith(SCHEDULE_KEYS)]
    if defining:
        described = ", ".join(f"{k} ({_get(saved, k)!r} -> {_get(current, k)!r})" for k in defining)
        raise RunFolderError(f"cannot resume {run_dir} with a changed experiment: {described}; restore "
                             "these values, or start a new run with log.name=NEW_NAME")
    return changed


def _get(tree, dotted):
    for key in dotted.split("."):
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def check_training_checkpoint(state, path):
    """A one-line error unless `state` is a training checkpoint of this repository."""
    missing = [k for k in TRAINING_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise RunFolderError(f"checkpoint.resume={path} is not a training checkpoint of this repository (no "
                             f"'{missing[0]}'); resume takes a checkpoint_*.pt of a run folder, and eval.py "
                             "evaluates other weights")


def local_buffers(model):
    """Copies of this rank's floating-point buffers (running statistics), by state_dict key."""
    keys = set(model.state_dict())
    return {name: b.detach().cpu().clone() for name, b in model.named_buffers()
            if name in keys and b.is_floating_point()}


@torch.no_grad()
def restore_buffers(model, saved):
    """Copy saved buffers back into the model (after DDP has broadcast rank 0's)."""
    for name, b in model.named_buffers():
        if name in saved:
            b.copy_(saved[name])
