"""Test-time normalization: what each norm layer declares about its statistics, and the modes that use it.

Every norm layer of this package declares
- `batch_statistics`: "all" (BN, SyncBN: mean and variance come from the batch in training),
  "bn_branch" (SN, SyncSN: only the BN branch does; IN and LN come from each sample) or "none"
  (GN, IN, LN, SN without its BN branch: nothing depends on other samples);
- `affine_parameters()`: the per-channel scale and shift;
- `switch_parameters()`: SN's importance logits (empty for the others).
Adaptation code reads only these declarations, never the classes, so a normalizer registered later
gets every method by declaring the same three things (docs/robustness.md).
"""
import contextlib
import dataclasses
from typing import Optional

import torch
import torch.distributed as dist

from .distributed import active_group
from .running import PooledMoments

STATISTICS = ("all", "bn_branch", "none")


@dataclasses.dataclass
class AdaptStatistics:
    """How a layer in eval mode normalizes instead of using its running buffers alone.

    prior None: the test batch's own statistics (prediction-time BN). prior N: Schneider et al.'s mix,
    N/(N+n) * running + n/(N+n) * batch for a batch of n samples. `pooled`, when set, also receives
    the batch's statistics (to estimate the target population). The running buffers never change.
    """

    prior: Optional[float] = None
    pooled: Optional[PooledMoments] = None


class Adaptable:
    """Mixin with the declarations of a layer without batch statistics; layers that have some override them."""

    batch_statistics = "none"
    test_statistics = None          # a AdaptStatistics while use_test_statistics is active, else None

    def affine_parameters(self):
        """The per-channel scale and shift, those that exist."""
        return [p for p in (getattr(self, "weight", None), getattr(self, "bias", None)) if p is not None]

    def switch_parameters(self):
        return []


def declared(module):
    """Whether `module` makes the declarations adaptation reads."""
    return isinstance(getattr(module, "batch_statistics", None), str) and callable(
        getattr(module, "affine_parameters", None))


def norm_layers(model):
    """[(name, layer)] of every declaring layer; a norm layer that declares nothing is an error, not a skip."""
    from .tools import is_norm
    layers = []
    for name, module in model.named_modules():
        if declared(module):
            if module.batch_statistics not in STATISTICS:
                raise TypeError(f"{name}: batch_statistics must be one of {STATISTICS}, "
                                f"got {module.batch_statistics!r}")
            layers.append((name, module))
        elif is_norm(module) or getattr(module, "running_mean", None) is not None:
            raise TypeError(f"{name} ({type(module).__name__}) declares nothing for test-time adaptation; build "
                            "norms with norms.build_norm or give the layer batch_statistics and affine_parameters "
                            "(docs/robustness.md)")
    return layers


def statistics_layers(model):
    """The layers whose output depends on other samples of the batch."""
    return [m for _, m in norm_layers(model) if m.batch_statistics != "none"]


@contextlib.contextmanager
def use_test_statistics(model, prior=None, pooled=None):
    """Within the block, eval-mode statistics layers use the batch (mixed with `prior` N, if given).

    `pooled` is called with each layer and returns its PooledMoments accumulator (or None). Yields the
    number of layers affected: 0 for models without batch statistics (GN, IN, LN), where every
    statistics method is the identity.
    """
    if prior is not None and prior < 0:
        raise ValueError(f"prior N must be >= 0, got {prior}")
    layers = statistics_layers(model)
    try:
        for layer in layers:
            layer.test_statistics = AdaptStatistics(prior, pooled(layer) if pooled else None)
        yield len(layers)
    finally:
        for layer in layers:
            layer.test_statistics = None


def tent_parameters(model, switch=False):
    """The parameters Tent adapts: every norm layer's affine ones, plus SN's switch logits with `switch`."""
    params = []
    for _, layer in norm_layers(model):
        params += layer.affine_parameters() + (layer.switch_parameters() if switch else [])
    return params


@torch.no_grad()
def estimate_population(model, batches, group=None):
    """AdaBN: set the running statistics to the population statistics of `batches` (the target data).

    Each layer's statistic is that of all samples together, as if the whole target split were one batch:
    per-batch sums are pooled exactly (float64, law of total variance), not averaged. BN's running_var
    stays the unbiased variance over all N*H*W values, SN's the BN-branch variance over all samples, as
    training defines them. Under torch.distributed the sums are all-reduced. Returns the images seen.
    """
    layers = statistics_layers(model)
    device = next(model.parameters()).device
    was_training = model.training
    pools = {layer: PooledMoments(layer.num_features, device) for layer in layers}
    seen = torch.zeros((), dtype=torch.float64, device=device)
    try:
        model.eval()
        with use_test_statistics(model, pooled=pools.get):
            for batch in batches:
                images = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(images.to(device, non_blocking=True))
                seen += images.shape[0]
        if active_group(group) is not None:
            dist.all_reduce(seen, group=group)
        if seen == 0:
            raise ValueError("AdaBN got no target images; the target split is empty")
        for layer, pool in pools.items():
            pool.all_reduce(group)
            mean, var = pool.result(unbiased=layer.batch_statistics == "all")
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(var)
    finally:
        model.train(was_training)
    return int(seen.item())


def statistics_state(model):
    """A copy of every statistics layer's running buffers, for `load_statistics_state` after AdaBN."""
    return [(layer.running_mean.clone(), layer.running_var.clone()) for layer in statistics_layers(model)]


@torch.no_grad()
def load_statistics_state(model, state):
    for layer, (mean, var) in zip(statistics_layers(model), state, strict=True):
        layer.running_mean.copy_(mean)
        layer.running_var.copy_(var)


__all__ = ["Adaptable", "AdaptStatistics", "declared", "norm_layers", "statistics_layers", "use_test_statistics",
           "tent_parameters", "estimate_population", "statistics_state", "load_statistics_state"]
