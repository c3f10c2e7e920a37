"""The four per-(n, c) primitives of the fused norms in plain torch ops: the CPU path and the kernels' twin."""
import torch

from ..common import stats_dtype


def nc_moments(x):
    """(mean, biased var) over H, W per (n, c), in float32 (float64 for float64 input)."""
    var, mean = torch.var_mean(x.to(stats_dtype(x)), dim=(2, 3), correction=0)
    return mean, var


def _centered(x, m):
    # x - m promotes low-precision x to m's float32 without a separate upcast copy, keeps x's memory format,
    # and centering before scaling avoids the x*scale - m*scale cancellation of large-mean inputs
    return torch.sub(x, m[..., None, None])


def nc_apply(x, m, scale, shift):
    """y = (x - m) * scale + shift, in x's dtype and memory format."""
    return _centered(x, m).mul_(scale[..., None, None]).add_(shift[..., None, None]).to(x.dtype)


def nc_grad_sums(x, dy, m):
    """(sum dy, sum dy * (x - m)) over H, W per (n, c), accumulated in m's dtype."""
    s_dy = dy.sum(dim=(2, 3), dtype=m.dtype)
    s_dyxc = (_centered(x, m).mul_(dy)).sum(dim=(2, 3))
    return s_dy, s_dyxc


def nc_grad_input(x, dy, m, scale, k1, k0):
    """dx = scale * dy + k1 * (x - m) + k0, in x's dtype and memory format."""
    dx = _centered(x, m).mul_(k1[..., None, None]).add_(k0[..., None, None])
    return dx.addcmul_(dy, scale[..., None, None]).to(x.dtype)
