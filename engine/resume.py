"""What resuming may change, what a training checkpoint must hold, and each rank's own running statistics."""
import torch

from configs.keys import BOOKKEEPING_KEYS, KERNEL_KEYS, RUNTIME_KEYS, SCHEDULE_KEYS, matches

from .run_folder import RunFolderError

# A resume changes runtime keys silently, reports a change of these, and refuses a change of any other key
# (model.*, norm.* but norm.impl, batch.*, optim.*, schedule.*, data.root and the transforms, train.seed, ...).
REPORTED_KEYS = BOOKKEEPING_KEYS + KERNEL_KEYS + SCHEDULE_KEYS

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
    changed = [k for k in changed_keys(saved or {}, current) if not matches(k, RUNTIME_KEYS)]
    defining = [k for k in changed if not matches(k, REPORTED_KEYS)]
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
