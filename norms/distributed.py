"""Differentiable collectives and the merge of per-rank moments used by the synchronized norms."""
import torch
import torch.distributed as dist


def active_group(group=None):
    """Return (group, world_size, rank) when a multi-process group is active, else None."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    world = dist.get_world_size(group)
    if world == 1:
        return None
    return group, world, dist.get_rank(group)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the backward is the same sum, which is exactly the gradient of a global loss."""

    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def all_gather_rows(row, group, world, rank):
    """Differentiable all-gather of a 1-D tensor into (world, len); each rank fills its own row of a sum."""
    rows = [row if r == rank else torch.zeros_like(row) for r in range(world)]
    return _AllReduceSum.apply(torch.stack(rows), group)


def merge_moments(count, mean, var, group=None):
    """Combine per-rank (count, mean (C,), biased var (C,)) into global (mean, var, total count as a tensor).

    Uses Chan's parallel formula on gathered per-rank moments rather than summed raw second
    moments, so there is no E[x^2]-E[x]^2 cancellation; ranks may hold different counts,
    including none.
    Without an active multi-process group it returns its input unchanged.
    """
    active = active_group(group)
    if active is None:
        return mean, var, count
    group, world, rank = active
    if count == 0:  # an empty local batch has NaN moments; it must contribute nothing
        mean, var = torch.nan_to_num(mean, nan=0.0), torch.nan_to_num(var, nan=0.0)
    n = torch.full((1,), float(count), dtype=mean.dtype, device=mean.device)
    table = all_gather_rows(torch.cat([n, mean, var]), group, world, rank)
    counts, means, vars_ = table[:, :1], table[:, 1:1 + mean.numel()], table[:, 1 + mean.numel():]
    total = counts.sum()
    g_mean = (counts * means).sum(0) / total
    g_var = (counts * (vars_ + (means - g_mean) ** 2)).sum(0) / total
    return g_mean, g_var, total
