"""nn.GroupNorm with a fused path (GN, and IN / LN as G = C / G = 1) that keeps channels_last as it is."""
import torch
import torch.nn as nn

from . import kernels
from .fused import ImplChoice, fused_norm, outside_compiler
from .kernels import cpu as cpu_kernels


class GroupNorm2d(ImplChoice, nn.GroupNorm):
    """nn.GroupNorm (same constructor, state_dict and numerics: biased variance) plus `impl`.

    impl="fused" normalizes 4-D inputs with the per-(n, c) kernels: group statistics are merged
    exactly from the per-channel moments (mean of means; mean of variances plus variance of the
    means), and channels_last input is read in place, where PyTorch's CUDA group_norm copies it
    to contiguous and back. On CUDA that is three Triton launches forward and four backward, the
    group arithmetic inside them (norms/kernels/triton_gn.py). On the CPU "fused" and "auto" run
    the compiled kernels (gn_cpu.cpp) for float32/bfloat16 4-D input, else nn.GroupNorm's own
    forward ("auto") or the torch-op fused path ("fused"). "reference" is nn.GroupNorm's own
    forward; other input ranks always use it.
    """

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
        if self._use_cpu_kernels(x):
            lib = cpu_kernels.library_for(x, (self.weight, self.bias))
            if lib is not None:
                return outside_compiler(cpu_kernels.group_norm)(lib, x, self.weight, self.bias, self.num_groups,
                                                                self.eps)
        prims = self._fused_prims(x)
        if prims is None:
            return super().forward(x)
        if kernels.wants_triton(x):
            return outside_compiler(kernels.layer_kernels("triton_gn").group_norm)(x, self.weight, self.bias,
                                                                                 self.num_groups, self.eps)
        return fused_norm(x, self._fused_stats, self.bias, (self.weight,), prims)

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
