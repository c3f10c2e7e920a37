"""Running-statistics bookkeeping shared by the BN and SN layers, and its population-average mode."""
import torch
import torch.distributed as dist

from .distributed import active_group


class PopulationAverage:
    """Accumulates count-weighted averages of per-batch statistics (float64) for `recalibrate`."""

    def __init__(self, num_features, device):
        self.weight = torch.zeros((), dtype=torch.float64, device=device)
        self.mean = torch.zeros(num_features, dtype=torch.float64, device=device)
        self.var = torch.zeros(num_features, dtype=torch.float64, device=device)

    def add(self, mean, var, count):
        """Add a (groups, C) block of statistics, each group holding `count` samples."""
        self.weight += count * mean.shape[0]
        self.mean += count * mean.double().sum(0)
        self.var += count * var.double().sum(0)


class RunningStatsMixin:
    """EMA update of `running_mean`/`running_var` with PyTorch's momentum convention.

    running = (1 - momentum) * running + momentum * batch_statistic. With several statistics
    groups the batch statistic is the average over groups. While a `PopulationAverage` is
    attached (only inside `norms.recalibrate`) statistics go to it instead.
    """

    _population = None

    @torch.no_grad()
    def _update_running(self, mean, var, count):
        if self._population is not None:
            self._population.add(mean, var, count)
            return
        mean, var = (mean[0], var[0]) if mean.shape[0] == 1 else (mean.mean(0), var.mean(0))  # one launch less
        tracked = getattr(self, "num_batches_tracked", None)
        if tracked is not None:
            tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / float(tracked)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(var.to(self.running_var.dtype), momentum)


class PooledMoments:
    """Exact statistics of everything added: count-weighted sums of means and second moments in float64."""

    def __init__(self, num_features, device):
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.sum = torch.zeros(num_features, dtype=torch.float64, device=device)
        self.sum_sq = torch.zeros(num_features, dtype=torch.float64, device=device)

    def add(self, mean, biased_var, count):
        """Add one batch: per-channel mean and biased variance over `count` values."""
        mean = mean.detach().double()
        self.count += count
        self.sum += count * mean
        self.sum_sq += count * (biased_var.detach().double() + mean * mean)

    def all_reduce(self, group=None):
        if active_group(group) is None:
            return
        packed = torch.cat([self.count[None], self.sum, self.sum_sq])
        dist.all_reduce(packed, group=group)
        c = self.sum.numel()
        self.count, self.sum, self.sum_sq = packed[0], packed[1:1 + c], packed[1 + c:]

    def result(self, unbiased):
        """(mean, variance) of all values added; the variance with Bessel's correction when `unbiased`."""
        mean = self.sum / self.count
        var = (self.sum_sq / self.count - mean * mean).clamp_min(0)
        if unbiased and self.count > 1:
            var = var * (self.count / (self.count - 1))
        return mean, var
