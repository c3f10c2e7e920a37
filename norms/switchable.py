"""Switchable Normalization (Luo et al., arXiv:1806.10779) with the released code's numerics."""
import torch
import torch.nn as nn

from . import backends
from .adaptation import Adaptable
from .common import affine, check_4d, check_groups, stats_dtype
from .distributed import active_group, merge_moments
from .fused import ImplChoice, fused_norm
from .kernels import ops
from .running import RunningStatsMixin


class SwitchNorm2d(Adaptable, ImplChoice, RunningStatsMixin, nn.Module):
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

    - Test-time statistics (norms/adaptation.py) change the BN branch alone in eval mode: the test
      batch's BN-branch mean and variance, or their mix with the running buffers; IN and LN stay
      per sample, so without the BN branch there is nothing to adapt.

    impl: "reference" runs the code below; "fused" and "auto" run the implementation norms/backends.py
    chooses for the input (compiled CPU kernels, Triton kernels, or the generic fused path of
    norms/fused.py), which compute these same statistics; docs/kernels.md lists them.
    """

    kind = "sn"

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

    @property
    def batch_statistics(self):
        return "bn_branch" if self.using_bn else "none"

    def switch_parameters(self):
        return [self.mean_weight, self.var_weight]

    def forward(self, x):
        check_4d(x, type(self).__name__)
        if not self.training and self.test_statistics is not None:
            return self._forward_test_statistics(x)
        return backends.forward(self, x)

    def _forward_test_statistics(self, x):
        """The reference computation with the BN branch taken from this batch (every backend computes the same)."""
        n, c, h, w = x.shape
        xs = x.to(stats_dtype(x))
        var_in, mean_in = torch.var_mean(xs, dim=(2, 3), correction=1 if h * w > 1 else 0)
        mean_bn = mean_in.mean(0)
        var_bn = var_in.mean(0) + (mean_in - mean_bn).pow(2).mean(0)
        test = self.test_statistics
        if test.pooled is not None:
            test.pooled.add(mean_bn, var_bn, n)
        if test.prior is not None:
            source = test.prior / (test.prior + n)
            mean_bn = source * self.running_mean + (1 - source) * mean_bn
            var_bn = source * self.running_var + (1 - source) * var_bn
        mean, var = self._mix(mean_in, var_in, self.mean_weight, self.var_weight, (mean_bn, var_bn), record=False)
        scale = self.weight * torch.rsqrt(var + self.eps)
        return affine(xs, scale, self.bias - mean * scale).to(x.dtype)

    def _running(self):
        """(running_mean, running_var) where the BN branch reads them (eval mode), else ()."""
        return (self.running_mean, self.running_var) if self.using_bn and not self.training else ()

    def _forward_reference(self, x):
        n, c, h, w = x.shape
        correction = 1 if h * w > 1 else 0
        xs = x.to(stats_dtype(x))  # one upcast copy for low precision, shared by the statistics and the affine
        var_in, mean_in = torch.var_mean(xs, dim=(2, 3), correction=correction)
        mean, var = self._mix(mean_in, var_in, self.mean_weight, self.var_weight, self._running(), record=True)
        scale = self.weight * torch.rsqrt(var + self.eps)
        return affine(xs, scale, self.bias - mean * scale).to(x.dtype)

    def _forward_fused(self, x):
        leaves = (self.weight, self.mean_weight, self.var_weight, *self._running())
        return fused_norm(x, self._fused_stats, self.bias, leaves)

    def _forward_kernels(self, x, backend):
        """y from the whole-layer kernels of `backend` (norms/kernels/ops.py); the buffers move in `_record`."""
        batch_bn = self.using_bn and self.training
        running = (self.running_mean, self.running_var) if self.using_bn and not self.training else (None, None)
        groups = self.stat_groups if batch_bn else 1
        if batch_bn:
            check_groups(x.shape[0], groups, type(self).__name__)
        y, bn = ops.switch_norm(backend, x, self.weight, self.bias, self.mean_weight, self.var_weight, *running,
                                groups, self.eps)
        if bn is not None:
            self._record(bn[0], bn[1], x.shape[0] // groups)
        return y

    def _bn_is_local(self):
        """True when the BN branch uses this process's batch alone (what the whole-layer kernels compute)."""
        return True

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
            mean_bn, var_bn = running if len(running) else self._bn_branch(mean_in, var_in, record)
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
    all-reduce. With no multi-process group it equals SwitchNorm2d with stat_groups=1; statistics
    are global, so it has no `stat_groups`. With the generic fused implementation every rank's
    backward recomputes the (N, C) statistics graph, all-reduce included, so ranks issue the same
    collectives.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.003, using_moving_average=True,
                 using_bn=True, last_gamma=False, process_group=None, impl="auto"):
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
