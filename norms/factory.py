"""The one place that turns a normalization name and its options into a layer factory."""
import inspect

import torch.nn as nn

from .batchnorm import BatchNorm2d, SyncBatchNorm2d
from .fused import check_impl
from .groupnorm import GroupNorm2d
from .switchable import SwitchNorm2d, SyncSwitchNorm2d

_REGISTRY = {}


def register_norm(name):
    """Register `builder(num_channels, zero_init, **options) -> nn.Module` under `name`.

    The builder's keyword options (with defaults) are the options the name accepts.
    """
    def wrap(builder):
        if name in _REGISTRY:
            raise ValueError(f"norm '{name}' is already registered")
        _REGISTRY[name] = builder
        return builder
    return wrap


def available_norms():
    return sorted(_REGISTRY)


def norm_options(name):
    """{option: default} that norm `name` accepts (for listings such as train.py --list-norms)."""
    return _options(_REGISTRY[name])


def _options(builder):
    params = inspect.signature(builder).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _zero_gamma(layer, zero_init):
    if zero_init:
        nn.init.zeros_(layer.weight)
    return layer


# The defaults of every norm option live here; the builders pass every option to the layers explicitly.
@register_norm("bn")
def _bn(c, zero_init, eps=1e-5, momentum=None, stat_groups=1):
    return _zero_gamma(BatchNorm2d(c, eps=eps, momentum=0.1 if momentum is None else momentum,
                                   stat_groups=stat_groups), zero_init)


@register_norm("syncbn")
def _syncbn(c, zero_init, eps=1e-5, momentum=None):
    return _zero_gamma(SyncBatchNorm2d(c, eps=eps, momentum=0.1 if momentum is None else momentum), zero_init)


@register_norm("sn")
def _sn(c, zero_init, eps=1e-5, momentum=None, using_moving_average=True, using_bn=True, stat_groups=1,
        impl="auto"):
    return SwitchNorm2d(c, eps=eps, momentum=0.003 if momentum is None else momentum,
                        using_moving_average=using_moving_average, using_bn=using_bn, last_gamma=zero_init,
                        stat_groups=stat_groups, impl=impl)


@register_norm("syncsn")
def _syncsn(c, zero_init, eps=1e-5, momentum=None, using_moving_average=True, using_bn=True, impl="auto"):
    return SyncSwitchNorm2d(c, eps=eps, momentum=0.003 if momentum is None else momentum,
                            using_moving_average=using_moving_average, using_bn=using_bn, last_gamma=zero_init,
                            impl=impl)


@register_norm("gn")
def _gn(c, zero_init, eps=1e-5, groups=32, impl="auto"):
    if c % groups:
        return InvalidNorm(f"GroupNorm with groups={groups} needs a channel count divisible by "
                           f"{groups}, got {c}; set norm.groups to a divisor of {c}")
    return _zero_gamma(GroupNorm2d(groups, c, eps=eps, impl=impl), zero_init)


@register_norm("in")
def _in(c, zero_init, eps=1e-5, impl="auto"):
    return _zero_gamma(GroupNorm2d(c, c, eps=eps, impl=impl), zero_init)


@register_norm("ln")
def _ln(c, zero_init, eps=1e-5, impl="auto"):
    return _zero_gamma(GroupNorm2d(1, c, eps=eps, impl=impl), zero_init)


class InvalidNorm(nn.Module):
    """Stands where a norm layer could not be built, so the model can name it (see `check_norms`)."""

    def __init__(self, reason):
        super().__init__()
        self.reason = reason

    def forward(self, x):
        raise RuntimeError(self.reason)


def check_norms(model):
    """Raise ValueError naming the first norm layer of `model` that could not be built."""
    for name, module in model.named_modules():
        if isinstance(module, InvalidNorm):
            raise ValueError(f"cannot build norm layer '{name}': {module.reason}")
    return model


class NormFactory:
    """Callable `factory(num_channels, zero_init=False) -> nn.Module` for one configured norm."""

    def __init__(self, name, builder, options):
        self.name, self._builder, self.options = name, builder, options

    def __call__(self, num_channels, zero_init=False):
        return self._builder(num_channels, zero_init, **self.options)

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"NormFactory({self.name!r}{', ' if opts else ''}{opts})"


def build_norm(type, **options):
    """Return the layer factory for norm `type` ('bn', 'syncbn', 'gn', 'sn', 'syncsn', 'in', 'ln').

    Options a type does not use must keep their default value, so a setting that would be
    silently ignored is an error instead (`stat_groups`, one process emulating several GPUs, is
    an option of bn and sn only: per-sample and synchronized norms have nothing to split).
    momentum=None means the type's default (BN 0.1, SN 0.003, PyTorch's convention). impl
    ('auto', 'reference', 'fused'; sn, syncsn, gn, in, ln) picks the fused kernels or the
    reference code, see norms.backends.
    """
    if type not in _REGISTRY:
        raise ValueError(f"unknown norm type '{type}'; choose one of {available_norms()}")
    if "impl" in options:
        check_impl(options["impl"], f"norm '{type}'")
    builder = _REGISTRY[type]
    accepted = _options(builder)
    defaults = {}
    for other in _REGISTRY.values():
        defaults.update(_options(other))
    for key, value in options.items():
        if key in accepted:
            continue
        if key not in defaults:
            raise ValueError(f"unknown norm option '{key}'")
        if value != defaults[key]:
            users = sorted(name for name, other in _REGISTRY.items() if key in _options(other))
            raise ValueError(f"norm option '{key}={value}' does not apply to norm type '{type}'; remove it "
                             f"(it is an option of {', '.join(users)})")
    return NormFactory(type, builder, {k: v for k, v in options.items() if k in accepted})
