"""nn.GroupNorm with fused implementations (GN, and IN / LN as G = C / G = 1) that keep channels_last as it is."""
import torch
import torch.nn as nn

from . import backends
from .adaptation import Adaptable
from .fused import ImplChoice, fused_norm
from .kernels import ops


class GroupNorm2d(Adaptable, ImplChoice, nn.GroupNorm):
    """nn.GroupNorm (same constructor, state_dict and numerics: biased variance) plus `impl`.

    For 4-D input, "fused" and "auto" run the implementation norms/backends.py chooses (compiled CPU
    kernels, Triton kernels, or the generic fused path of norms/fused.py): group statistics merged
    exactly from per-channel moments (mean of means; mean of variances plus variance of the means),
    channels_last read in place. "reference" is nn.GroupNorm's own forward, which other input ranks
    always use. docs/kernels.md lists the implementations.
    """

    kind = "gn"

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None, impl="auto"):
        super().__init__(num_groups, num_channels, eps, affine, device, dtype)
        self.impl = impl

    def extra_repr(self):
        return f"{super().extra_repr()}, impl={self.impl!r}"

    def forward(self, x):
        if x.dim() != 4:
            return super().forward(x)
        if x.shape[1] != self.num_channels:
            raise ValueError(f"{type(self).__name__} expects {self.num_channels} channels, got input of shape "
                             f"{tuple(x.shape)}")
        return backends.forward(self, x)

    def _forward_reference(self, x):
        return super().forward(x)

    def _forward_fused(self, x):
        return fused_norm(x, self._fused_stats, self.bias, (self.weight,))

    def _forward_kernels(self, x, backend):
        return ops.group_norm(backend, x, self.weight, self.bias, self.num_groups, self.eps)

    def _bn_is_local(self):
        """GN has no batch statistics: always true."""
        return True

    def _fused_stats(self, mean_in, var_biased, count, leaves, record):
        """(mean, scale) per (n, c) from the per-channel moments of equal counts, merged per group."""
        (weight,) = leaves
        n, c = mean_in.shape
        shape = (n, self.num_groups, c // self.num_groups)
        means, variances = mean_in.view(shape), var_biased.view(shape)
        mean = means.mean(-1, keepdim=True)
        var = variances.mean(-1, keepdim=True) + (means - mean).pow(2).mean(-1, keepdim=True)
        scale = torch.rsqrt(var + self.eps).expand(shape).reshape(n, c)
        if weight is not None:
            scale = scale * weight
        return mean.expand(shape).reshape(n, c), scale
