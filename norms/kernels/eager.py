"""The four per-(n, c) primitives of the fused norms in plain torch ops: the CPU path and the kernels' twin.

For float32/float64 the reductions run through PyTorch's native batch-norm kernels with the (n, c)
pairs as the channels: a contiguous NCHW x viewed as (1, N*C, H, W) in one call, a channels_last x one
sample at a time. Those kernels read x (and dy) once, with a Welford/centered accumulation, where
var_mean over (H, W) or x - m followed by a product and a sum make several passes and temporaries.
Other dtypes (bf16/fp16 on CPU) take the generic torch-op path, upcast to float32.
"""
import torch

from ..common import stats_dtype

_NATIVE = (torch.float32, torch.float64)


def _layout(x):
    """'flat' (one (1, N*C, H, W) view), 'per_sample' (channels_last) or None (generic path)."""
    if x.dtype not in _NATIVE or x.numel() == 0:  # an empty batch: a rank without samples
        return None
    if x.is_contiguous():
        return "flat"
    if x.is_contiguous(memory_format=torch.channels_last):
        return "per_sample"
    return None


def _flat(t):
    n, c, h, w = t.shape
    return t.view(1, n * c, h, w)


def nc_moments(x):
    """(mean, biased var) over H, W per (n, c), in float32 (float64 for float64 input)."""
    layout = _layout(x)
    if layout == "flat":
        mean, var = torch.batch_norm_update_stats(_flat(x), None, None, 0.0)
        return mean.view(x.shape[:2]), var.view(x.shape[:2])
    if layout == "per_sample":
        stats = [torch.batch_norm_update_stats(x[i:i + 1], None, None, 0.0) for i in range(x.shape[0])]
        return torch.stack([s[0] for s in stats]), torch.stack([s[1] for s in stats])
    if x.numel() == 0:  # no samples (or no pixels): NaN statistics of shape (n, c), as var_mean's, without its warning
        nan = torch.full(x.shape[:2], float("nan"), dtype=stats_dtype(x), device=x.device)
        return nan, nan.clone()
    var, mean = torch.var_mean(x.to(stats_dtype(x)), dim=(2, 3), correction=0)
    return mean, var


def _nc(t):
    return t[..., None, None]


def nc_apply(x, m, scale, shift):
    """y = (x - m) * scale + shift, in x's dtype and memory format, as one multiply-add x * scale + offset.

    Like PyTorch's own batch norm, the offset folds m in (its accuracy for large-mean inputs: docs/kernels.md).
    """
    return torch.addcmul(_nc(shift - m * scale), x, _nc(scale)).to(x.dtype)


def nc_grad_sums(x, dy, m):
    """(sum dy, sum dy * (x - m)) over H, W per (n, c), accumulated in m's dtype."""
    layout = _layout(x) if dy.dtype == x.dtype else None
    if layout == "flat" and dy.is_contiguous():
        _, s_dyxc, s_dy = torch.ops.aten.native_batch_norm_backward(
            _flat(dy), _flat(x), None, None, None, m.reshape(-1), torch.ones_like(m).reshape(-1), True, 0.0,
            [False, True, True])
        return s_dy.view(m.shape), s_dyxc.view(m.shape)
    if layout == "per_sample":
        ones = torch.ones_like(m[0])
        sums = [torch.ops.aten.native_batch_norm_backward(dy[i:i + 1], x[i:i + 1], None, None, None, m[i], ones,
                                                          True, 0.0, [False, True, True]) for i in range(x.shape[0])]
        return torch.stack([s[2] for s in sums]), torch.stack([s[1] for s in sums])
    s_dy = dy.sum(dim=(2, 3), dtype=m.dtype)
    s_dyxc = torch.sub(x, _nc(m)).mul_(dy).sum(dim=(2, 3))
    return s_dy, s_dyxc


def nc_grad_input(x, dy, m, scale, k1, k0):
    """dx = scale * dy + k1 * (x - m) + k0, in x's dtype and memory format (two multiply-add passes)."""
    return torch.addcmul(_nc(k0 - k1 * m), x, _nc(k1)).addcmul_(dy, _nc(scale)).to(x.dtype)
