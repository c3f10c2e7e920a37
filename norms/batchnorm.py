"""BatchNorm with virtual statistics groups, and a synchronized BatchNorm that runs on any device."""
import torch
import torch.nn as nn

from .adaptation import Adaptable
from .common import affine, check_4d, check_groups, stats_dtype
from .distributed import active_group, merge_moments
from .running import RunningStatsMixin


class BatchNorm2d(Adaptable, RunningStatsMixin, nn.BatchNorm2d):
    """nn.BatchNorm2d (same state_dict) whose batch statistics can be taken per chunk of the batch.

    stat_groups=k splits the batch into k equal consecutive chunks, each normalized with its own
    statistics: one process behaves like k GPUs holding N/k samples each. Normalization uses the
    biased variance, the running variance the unbiased one (PyTorch's convention); the running
    buffers move towards the average of the k chunks' statistics.

    Test-time statistics (norms/adaptation.py) replace the running buffers in eval mode by those of
    the whole test batch (biased variance, as training normalizes), or mix them with the batch's
    unbiased variance, the statistic the running buffer averages; stat_groups does not apply there.
    """

    batch_statistics = "all"

    def __init__(self, num_features, eps=1e-5, momentum=0.1, stat_groups=1):
        super().__init__(num_features, eps=eps, momentum=momentum)
        if stat_groups < 1:
            raise ValueError(f"stat_groups must be >= 1, got {stat_groups}")
        self.stat_groups = stat_groups

    def extra_repr(self):
        return super().extra_repr() + f", stat_groups={self.stat_groups}"

    def forward(self, x):
        check_4d(x, type(self).__name__)
        if not self.training and self.test_statistics is not None:
            return self._forward_test_statistics(x)
        if not self.training or (self.stat_groups == 1 and self._population is None):
            return super().forward(x)
        n, c, h, w = x.shape
        k = self.stat_groups
        check_groups(n, k, type(self).__name__)
        xs = x.to(stats_dtype(x))  # one upcast copy for low precision, shared by the statistics and the affine
        var, mean = torch.var_mean(xs.view(k, n // k, c, h, w), dim=(1, 3, 4), correction=0)
        return self._normalize(xs, mean, var, n // k * h * w).to(x.dtype)

    def _forward_test_statistics(self, x):
        n, c, h, w = x.shape
        xs = x.to(stats_dtype(x))
        var, mean = torch.var_mean(xs, dim=(0, 2, 3), correction=0)
        count = n * h * w
        test = self.test_statistics
        if test.pooled is not None:
            test.pooled.add(mean, var, count)
        if test.prior is not None:
            source = test.prior / (test.prior + n)
            unbiased = var * (count / (count - 1)) if count > 1 else var
            mean = source * self.running_mean + (1 - source) * mean
            var = source * self.running_var + (1 - source) * unbiased
        scale = self.weight * torch.rsqrt(var + self.eps)
        return affine(xs, scale, self.bias - mean * scale).to(x.dtype)

    def _normalize(self, x, mean, var, count):
        """Normalize x with (k, C) statistics of k equal chunks of `count` values per channel each."""
        if not torch.is_tensor(count) and count < 2:
            raise ValueError(f"{type(self).__name__}: expected more than 1 value per channel when training")
        self._update_running(mean.detach(), var.detach() * (count / (count - 1)), count)
        per_sample = x.shape[0] // mean.shape[0]
        scale = self.weight * torch.rsqrt(var + self.eps)
        shift = self.bias - mean * scale
        return affine(x, scale.repeat_interleave(per_sample, 0), shift.repeat_interleave(per_sample, 0))


class SyncBatchNorm2d(BatchNorm2d):
    """BatchNorm whose statistics cover the whole global batch, all-reduced across the process group.

    Works on CPU (gloo) and CUDA (NCCL), with equal or unequal per-rank batch sizes; gradients
    flow through the all-reduce. With no multi-process group it is a plain BatchNorm. Statistics
    are global, so it has no `stat_groups` (one process emulating several GPUs would not change them).
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, process_group=None):
        super().__init__(num_features, eps=eps, momentum=momentum, stat_groups=1)
        self.process_group = process_group

    def forward(self, x):
        check_4d(x, type(self).__name__)
        if not self.training or active_group(self.process_group) is None:
            return super().forward(x)
        n, c, h, w = x.shape
        xs = x.to(stats_dtype(x))
        var, mean = torch.var_mean(xs, dim=(0, 2, 3), correction=0)
        mean, var, total = merge_moments(n * h * w, mean, var, self.process_group)
        return self._normalize(xs, mean[None], var[None], total).to(x.dtype)
