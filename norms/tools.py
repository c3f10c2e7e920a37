"""Model-level helpers that need to know which modules are norm layers."""
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from .distributed import active_group
from .switchable import SwitchNorm2d

NORM_TYPES = (_BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d, SwitchNorm2d)


def is_norm(module):
    """True for every normalization layer build_norm can make (their parameters may skip weight decay)."""
    return isinstance(module, NORM_TYPES)


@torch.no_grad()
def average_running_stats(model, group=None):
    """Average running_mean/running_var over ranks, so every rank holds the mean of the per-rank EMAs.

    The EMA is linear, so this equals an EMA of the statistics averaged over all (virtual) GPUs:
    w processes with stat_groups=k then hold exactly what one process with stat_groups=w*k holds.
    """
    active = active_group(group)
    if active is None:
        return
    buffers = [b for m in model.modules() if is_norm(m)
               for b in (getattr(m, "running_mean", None), getattr(m, "running_var", None)) if b is not None]
    if not buffers:
        return
    flat = torch.cat([b.reshape(-1).double() for b in buffers])
    dist.all_reduce(flat, group=group)
    flat /= active[1]
    offset = 0
    for b in buffers:
        b.copy_(flat[offset:offset + b.numel()].view_as(b))
        offset += b.numel()


@torch.no_grad()
def switch_weights(model):
    """{layer name: {"mean_in": .., "var_bn": ..}} softmax importance weights of every SN layer."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, SwitchNorm2d):
            branches = ("in", "ln", "bn")[:m.mean_weight.numel()]
            mw, vw = torch.softmax(m.mean_weight.float(), 0), torch.softmax(m.var_weight.float(), 0)
            out[name] = {**{f"mean_{b}": float(w) for b, w in zip(branches, mw)},
                         **{f"var_{b}": float(w) for b, w in zip(branches, vw)}}
    return out
