"""One autograd Function for every per-(n, c)-moment norm (SN, GN, IN, LN): two passes forward, two backward.

A layer supplies `stats(mean_in, var_in, count, leaves, record) -> (mean, scale)`, both (N, C): the
small differentiable graph from the per-(n, c) mean and *biased* variance over `count` = H*W
positions to the mean it subtracts and the factor it multiplies by. `leaves` are the tensors that
graph reads (parameters, and buffers it must see unchanged in backward); `record` is True only
in the forward call, so running statistics are recorded once. The output is computed centered,

    y = (x - mean_in) * scale + shift,   shift = bias + (mean_in - mean) * scale,

which avoids the cancellation of x * scale - mean * scale for large-mean inputs. Backward reduces
(dy, dy * (x - mean_in)) in one pass, differentiates the recomputed small graph with
torch.autograd.grad, and writes dx = scale * dy + k1 * (x - mean_in) + k0 in one more pass. Saved for backward: x and
(N, C)-sized statistics only.
"""
import torch
from torch.autograd.function import once_differentiable

from . import kernels
from .common import check_4d


class _FusedNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bias, prims, stats, *leaves):
        mean_in, var_in = prims.nc_moments(x)
        count = x.shape[2] * x.shape[3]
        mean, scale = stats(mean_in, var_in, count, leaves, True)
        shift = (mean_in - mean) * scale
        if bias is not None:
            shift = shift + bias
        ctx.prims, ctx.stats, ctx.count = prims, stats, count
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.save_for_backward(x, mean_in, var_in, mean, scale, *leaves)
        return prims.nc_apply(x, mean_in, scale, shift)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, mean_in, var_in, mean, scale, *leaves = ctx.saved_tensors
        s_dy, s_dyxc = ctx.prims.nc_grad_sums(x, dy, mean_in)
        need_x = ctx.needs_input_grad[0]
        need_leaf = ctx.needs_input_grad[4:]
        grad_bias = s_dy.sum(0).to(ctx.bias_dtype) if ctx.needs_input_grad[1] else None
        with torch.enable_grad():
            m = mean_in.detach().requires_grad_(need_x)
            v = var_in.detach().requires_grad_(need_x)
            graph_leaves = [t if t is None else t.detach().requires_grad_(need) for t, need in zip(leaves, need_leaf)]
            wrt = [t for t in (m, v, *graph_leaves) if t is not None and t.requires_grad]
            grads = [None] * len(wrt)
            if wrt:
                mean2, scale2 = ctx.stats(m, v, ctx.count, graph_leaves, False)
                # d/d mean and d/d scale of sum(dy * ((x - mean) * scale + bias)), written centered on mean_in
                d_scale = s_dyxc + (mean_in - mean) * s_dy
                d_mean = -scale * s_dy
                grads = torch.autograd.grad((mean2, scale2), wrt, (d_mean, d_scale), allow_unused=True)
        found = dict(zip(map(id, wrt), grads))
        dx = None
        if need_x:
            dm, dv = (found.get(id(t)) for t in (m, v))
            k0 = torch.zeros_like(mean_in) if dm is None else dm / ctx.count
            k1 = torch.zeros_like(var_in) if dv is None else dv * (2.0 / ctx.count)
            dx = ctx.prims.nc_grad_input(x, dy, mean_in, scale, k1, k0)
        grad_leaves = [None if t is None else found.get(id(t)) for t in graph_leaves]
        return (dx, grad_bias, None, None, *grad_leaves)


def fused_norm(x, stats, bias, leaves, prims=None):
    """y = (x - mean) * scale + bias with (mean, scale) = stats(per-(n, c) moments of x), see the module doc.

    `prims` picks the primitives (norms.kernels.eager or the Triton module); default: kernels.backend(x).
    """
    check_4d(x, "fused norm")
    if prims is None:
        prims = kernels.backend(x)
    return _FusedNorm.apply(x, bias, prims, stats, *leaves)


IMPLS = ("auto", "reference", "fused")


def check_impl(impl, layer):
    if impl not in IMPLS:
        raise ValueError(f"{layer}: impl must be one of 'auto', 'reference', 'fused', got {impl!r}")


class ImplChoice:
    """The `impl` attribute of layers with fused implementations ('auto', 'reference' or 'fused'), checked when set.

    norms/backends.py turns it, with the input's device, dtype and layout, into the implementation that runs.
    """

    @property
    def impl(self):
        return self._impl

    @impl.setter
    def impl(self, value):
        check_impl(value, type(self).__name__)
        self._impl = value
