"""Switchable Normalization (Luo et al., arXiv:1806.10779) with the released code's numerics."""
import torch
import torch.nn as nn

from .common import affine, check_4d, check_groups, stats_dtype
from .distributed import active_group, merge_moments
from .fused import ImplChoice, fused_norm, outside_compiler
from . import kernels
from .kernels import cpu as cpu_kernels
from .running import RunningStatsMixin


class SwitchNorm2d(ImplChoice, RunningStatsMixin, nn.Module):
    """Mixes instance, layer and batch statistics with learned softmax weights, ordered [IN, LN, BN].

    Numerics follow the authors' released SwitchNorm2d so their checkpoints reproduce:
    - IN: per-(n, c) mean and *unbiased* variance over H*W. When H*W == 1 the unbiased variance
      is undefined (the released code returns NaN); here it is defined as 0, its biased value.
    - LN, BN: mean of the IN means over c (LN) or n (BN); variance mean(var_in + mean_in^2) - mean^2,
      evaluated in the algebraically identical, cancellation-free form mean(var_in) + var(mean_in).
    - y = weight * (x - mean) / sqrt(var + eps) + bias, statistics in float32 or wider.
    - Eval mode replaces only the BN branch by the running buffers; IN and LN still come from
      the sample.
    - momentum is PyTorch's convention (weight of the new batch statistic): the released code's
      0.997 is 0.003 here. Buffers start at mean 0 / var 1 as in nn.BatchNorm2d (the released
      code started both at 0; this only matters before the EMA has warmed up).
    - using_moving_average=False: the buffers are not updated during training; run
      `norms.recalibrate` afterwards (the released "batch average" mode).
    - using_bn=False: IN and LN only (2 logits, no buffers), for one sample per GPU.
    - stat_groups=k: the BN branch uses per-chunk statistics of k equal consecutive chunks of the
      batch (k emulated GPUs); the EMA moves towards the average of the chunks' statistics.

    impl: "reference" is the code below; "fused" (norms.fused) reads x once for the per-(n, c)
    moments and once to normalize, and once more with dy for the sums the backward needs and once
    to write dx. On CUDA these are Triton kernels (NCHW and channels_last, fp32/bf16/fp16/fp64
    inputs, fp32 or fp64 accumulation) with the mixing and its closed-form derivative inside them,
    four launches forward and four backward (norms/kernels/triton_sn.py); on the CPU compiled C++
    kernels for float32/bf16 (norms/kernels/cpu.py, the mixing in double); torch ops elsewhere and
    for SyncSwitchNorm2d across processes (whose backward re-runs `_mix` with autograd, all-reduce
    included). It saves only x and (N, C) statistics for backward. "auto" (default): fused on CUDA
    with Triton and on the CPU (measured faster), reference under torch.compile. Tested
    agreement: float64 fused vs reference within 1e-10 (outputs, all gradients, buffers); float32
    within 1e-5; low-precision inputs vs the float64 oracle within the output dtype's rounding
    (2^-7 relative for bf16). Float32 is accurate to a few ulps of the input's mean: at mean 1e4,
    5e-3 of a unit-variance output; the variance itself stays exact (no E[x^2] - E[x]^2).
    """

    fused_faster_on_cpu = True  # torch-op fused path vs reference, fwd+bwd at ResNet-50 shapes (README)

    def __init__(self, num_features, eps=1e-5, momentum=0.003, using_moving_average=True,
                 using_bn=True, last_gamma=False, stat_groups=1, impl="auto"):
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1] (PyTorch convention), got {momentum}")
        if stat_groups < 1:
            raise ValueError(f"stat_groups must be >= 1, got {stat_groups}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.using_moving_average = using_moving_average
        self.using_bn = using_bn
        self.last_gamma = last_gamma
        self.stat_groups = stat_groups
        self.impl = impl
        branches = 3 if using_bn else 2
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.mean_weight = nn.Parameter(torch.ones(branches))
        self.var_weight = nn.Parameter(torch.ones(branches))
        if using_bn:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
        self.reset_parameters()

    def reset_parameters(self):
        if self.using_bn:
            self.running_mean.zero_()
            self.running_var.fill_(1.0)
        nn.init.constant_(self.weight, 0.0 if self.last_gamma else 1.0)
        nn.init.zeros_(self.bias)
        nn.init.ones_(self.mean_weight)
        nn.init.ones_(self.var_weight)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"using_moving_average={self.using_moving_average}, using_bn={self.using_bn}, "
                f"stat_groups={self.stat_groups}, impl={self.impl!r}")

    def forward(self, x):
        check_4d(x, type(self).__name__)
        running = (self.running_mean, self.running_var) if self.using_bn and not self.training else ()
        prims = self._fused_prims(x)
        if self._use_cpu_kernels(x) and self._bn_is_local():
            y = outside_compiler(self._forward_cpu_kernels)(x, running)
            if y is not None:
                return y
        if prims is not None and kernels.wants_triton(x) and self._bn_is_local():
            return outside_compiler(self._forward_triton)(x, running)
        if prims is not None:
            return fused_norm(x, self._fused_stats, self.bias,
                              (self.weight, self.mean_weight, self.var_weight, *running), prims)
        n, c, h, w = x.shape
        correction = 1 if h * w > 1 else 0
        xs = x.to(stats_dtype(x))  # one upcast copy for low precision, shared by the statistics and the affine
        var_in, mean_in = torch.var_mean(xs, dim=(2, 3), correction=correction)
        mean, var = self._mix(mean_in, var_in, self.mean_weight, self.var_weight, running, record=True)
        scale = self.weight * torch.rsqrt(var + self.eps)
        return affine(xs, scale, self.bias - mean * scale).to(x.dtype)

    def _bn_is_local(self):
        """True when the BN branch uses this process's batch alone (the compiled CPU kernels' case)."""
        return True

    def _forward_cpu_kernels(self, x, running):
        """y from the compiled CPU kernels (norms/kernels/cpu.py), or None where they cannot run x."""
        params = (self.weight, self.bias, self.mean_weight, self.var_weight)
        buffers = (self.running_mean, self.running_var) if self.using_bn else ()
        lib = cpu_kernels.library_for(x, params + buffers)
        if lib is None:
            return None
        n, c = x.shape[:2]
        k = self.stat_groups
        batch_bn = self.using_bn and not running
        if batch_bn:
            check_groups(n, k, type(self).__name__)
        ema = buffers if batch_bn and self.using_moving_average and self._population is None else ()
        y, workspace = cpu_kernels.switch_norm(lib, x, *params, running, k, self.eps, ema, self.momentum)
        if batch_bn and self._population is not None:
            self._population.add(*cpu_kernels.batch_statistics(workspace, n, c, k), n // k)
        return y

    def _forward_triton(self, x, running):
        """y from the whole-layer Triton kernels (norms/kernels/triton_sn.py); the buffers move in `_record`."""
        batch_bn = self.using_bn and not running
        if batch_bn:
            check_groups(x.shape[0], self.stat_groups, type(self).__name__)
        y, bn = kernels.layer_kernels("triton_sn").switch_norm(x, self.weight, self.bias, self.mean_weight,
                                                               self.var_weight, running,
                                                               self.stat_groups if batch_bn else 1, self.eps)
        if batch_bn:
            self._record(bn[:, 0], bn[:, 1], x.shape[0] // self.stat_groups)
        return y

    def _mix(self, mean_in, var_in, mean_logits, var_logits, running, record):
        """Mixed (mean, var) from IN means and unbiased variances, the statistics both implementations share.

        `running` is (running_mean, running_var) in eval mode, else () and the BN branch uses the
        batch, recording the running statistics only when `record`.
        """
        mean_ln = mean_in.mean(1, keepdim=True)
        var_ln = var_in.mean(1, keepdim=True) + (mean_in - mean_ln).pow(2).mean(1, keepdim=True)
        mw = torch.softmax(mean_logits, 0)
        vw = torch.softmax(var_logits, 0)
        mean = mw[0] * mean_in + mw[1] * mean_ln
        var = vw[0] * var_in + vw[1] * var_ln
        if self.using_bn:
            mean_bn, var_bn = running or self._bn_branch(mean_in, var_in, record)
            mean = mean + mw[2] * mean_bn
            var = var + vw[2] * var_bn
        return mean, var

    def _fused_stats(self, mean_in, var_biased, count, leaves, record):
        """(mean, scale) of the fused path from biased per-(n, c) moments over `count` positions."""
        weight, mean_logits, var_logits, *running = leaves
        var_in = var_biased * (count / (count - 1)) if count > 1 else var_biased  # unbiased; 0 when H*W == 1
        mean, var = self._mix(mean_in, var_in, mean_logits, var_logits, running, record)
        scale = weight * torch.rsqrt(var + self.eps)
        return mean.expand_as(mean_in), scale.expand_as(mean_in)

    def _bn_branch(self, mean_in, var_in, record):
        """BN-branch batch mean and variance, broadcastable to (N, C)."""
        n, c = mean_in.shape
        k = self.stat_groups
        check_groups(n, k, type(self).__name__)
        mean_in, var_in = mean_in.view(k, n // k, c), var_in.view(k, n // k, c)
        mean_bn = mean_in.mean(1)
        var_bn = var_in.mean(1) + (mean_in - mean_bn[:, None]).pow(2).mean(1)
        if record:
            self._record(mean_bn, var_bn, n // k)
        return mean_bn.repeat_interleave(n // k, 0), var_bn.repeat_interleave(n // k, 0)

    def _record(self, mean_bn, var_bn, count):
        if self.using_moving_average or self._population is not None:
            self._update_running(mean_bn.detach(), var_bn.detach(), count)


class SyncSwitchNorm2d(SwitchNorm2d):
    """SwitchNorm2d whose BN branch uses statistics of the global batch, all-reduced across ranks.

    IN and LN stay per sample. Ranks may hold different batch sizes; gradients flow through the
    all-reduce. With no multi-process group it equals SwitchNorm2d with stat_groups=1.
    Statistics are global, so `stat_groups` (one process emulating several GPUs) does not
    change them and is ignored. With the fused implementation every rank's backward recomputes
    the (N, C) statistics graph, all-reduce included, so ranks issue the same collectives.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.003, using_moving_average=True,
                 using_bn=True, last_gamma=False, stat_groups=1, process_group=None, impl="auto"):
        super().__init__(num_features, eps, momentum, using_moving_average, using_bn, last_gamma, 1, impl)
        self.process_group = process_group

    def _bn_is_local(self):
        return active_group(self.process_group) is None

    def _bn_branch(self, mean_in, var_in, record):
        if active_group(self.process_group) is None:
            return super()._bn_branch(mean_in, var_in, record)
        mean_r = mean_in.mean(0)
        var_r = var_in.mean(0) + (mean_in - mean_r).pow(2).mean(0)
        mean_bn, var_bn, total = merge_moments(mean_in.shape[0], mean_r, var_r, self.process_group)
        if record:
            self._record(mean_bn[None], var_bn[None], total)
        return mean_bn, var_bn
