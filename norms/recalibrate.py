"""Precise-BN: recompute running statistics as exact population averages of per-batch statistics."""
import itertools

import torch
import torch.distributed as dist
from torch.nn.modules.batchnorm import _BatchNorm

from .distributed import active_group
from .running import PopulationAverage, RunningStatsMixin


def _targets(model):
    for module in model.modules():
        if getattr(module, "running_mean", None) is None:
            continue
        if isinstance(module, RunningStatsMixin):
            yield module
        elif isinstance(module, _BatchNorm):
            raise TypeError(f"recalibrate supports this repository's norm layers; got {type(module).__name__}. "
                            "Build the model's norms with norms.build_norm")


def _inputs(batch):
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def recalibrate(model, batches, num_batches, group=None):
    """Set running stats of every BN/SyncBN/SN layer to averages over `num_batches` training-mode passes.

    running_mean is the count-weighted average of the per-batch means and running_var that of
    the per-batch variances, each batch statistic computed exactly as the layer's EMA would
    take it (BN: unbiased over N*H*W of one statistics group; SN: its BN-branch variance). This
    is the population statistic the layer saw in training, free of EMA lag and noise. With
    stat_groups=k every group counts as one batch. Under torch.distributed the sums are
    all-reduced so every rank ends with the same buffers. Returns the number of batches used.
    """
    layers = list(_targets(model))
    device = next(model.parameters()).device
    was_training = model.training
    for layer in layers:
        layer._population = PopulationAverage(layer.num_features, layer.running_mean.device)
    used = 0
    try:
        model.train()
        for batch in itertools.islice(batches, num_batches):  # no batch beyond the last one used is loaded
            model(_inputs(batch).to(device, non_blocking=True))
            used += 1
        if used == 0:
            raise ValueError("recalibrate got no batches; pass a non-empty iterable of training batches")
        active = active_group(group)
        for layer in layers:
            pop = layer._population
            if active is not None:
                packed = torch.cat([pop.weight[None], pop.mean, pop.var])
                dist.all_reduce(packed, group=group)
                pop.weight, pop.mean, pop.var = packed[0], packed[1:1 + pop.mean.numel()], packed[1 + pop.mean.numel():]
            if pop.weight == 0:
                raise RuntimeError(f"recalibrate: layer {type(layer).__name__} saw no training-mode batch")
            layer.running_mean.copy_(pop.mean / pop.weight)
            layer.running_var.copy_(pop.var / pop.weight)
    finally:
        for layer in layers:
            layer._population = None
        model.train(was_training)
    return used
