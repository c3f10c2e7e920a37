"""SwitchNorm2d's and GroupNorm2d's whole forward and backward on the CPU as two compiled calls each.

Forward: one pass for the per-(n, c) moments, the IN/LN/BN mixing in double, one pass writing y.
Backward: one pass over (x, dy) for the per-(n, c) sums, the closed-form derivative of the mixing
in double, one pass writing dx (sn_cpu.cpp; GN, IN and LN the same way with exact group merges,
gn_cpu.cpp). Saved for backward: x and an (N, C)-sized double workspace. Float32 and bfloat16 inputs,
NCHW or channels_last; anything else takes the layer's other paths (`library_for`).
"""
import torch
from torch.autograd.function import once_differentiable

from . import cpu_build

DTYPES = {torch.float32: 0, torch.bfloat16: 1}


def _layout(x):
    """0 (NCHW), 1 (channels_last) or None (other strides)."""
    if x.is_contiguous():
        return 0
    if x.is_contiguous(memory_format=torch.channels_last):
        return 1
    return None


def library_for(x, tensors):
    """The compiled library where it can run x with these float32 parameters and buffers, else None."""
    if x.dtype not in DTYPES or x.device.type != "cpu" or x.numel() == 0 or _layout(x) is None:
        return None
    for t in tensors:
        if t is None:
            continue
        if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
            return None
    return cpu_build.library()[0]


def _ptr(t):
    return None if t is None else t.data_ptr()


def _empty_output(x, layout):
    return torch.empty_like(x, memory_format=torch.channels_last if layout else torch.contiguous_format)


def _backward_tensors(ctx, dy):
    """(x, weight, workspace) saved by a forward, dy in x's dtype and layout, and an empty dx."""
    x, weight, workspace = ctx.saved_tensors
    fmt = torch.channels_last if ctx.layout else torch.contiguous_format
    return x, weight, workspace, dy.to(x.dtype).contiguous(memory_format=fmt), _empty_output(x, ctx.layout)


def workspace_size(n, c, k):
    """Doubles in the kernels' workspace (the layout is documented in sn_cpu.cpp)."""
    return 6 + 4 * n * c + 2 * n + 2 * k * c


def batch_statistics(workspace, n, c, k):
    """(mean, var), each (k, C) float64: the BN branch's per-group batch statistics a forward left in `workspace`."""
    bn = workspace[6 + 4 * n * c + 2 * n:].view(2, k, c)
    return bn[0], bn[1]


class _SwitchNormCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, lib, x, weight, bias, mean_logits, var_logits, running, groups, eps, ema, momentum, workspace):
        n, c, h, w = x.shape
        layout = _layout(x)
        y = _empty_output(x, layout)
        run_mean, run_var = running or (None, None)
        ema_mean, ema_var = ema or (None, None)
        lib.sn_forward(x.data_ptr(), y.data_ptr(), DTYPES[x.dtype], layout, n, c, h * w, weight.data_ptr(),
                       bias.data_ptr(), mean_logits.data_ptr(), var_logits.data_ptr(), mean_logits.numel(),
                       _ptr(run_mean), _ptr(run_var), groups, eps, _ptr(ema_mean), _ptr(ema_var), momentum,
                       workspace.data_ptr(), torch.get_num_threads())
        ctx.save_for_backward(x, weight, workspace)
        ctx.lib, ctx.layout, ctx.groups, ctx.branches, ctx.eval = lib, layout, groups, mean_logits.numel(), bool(running)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, workspace, dy, dx = _backward_tensors(ctx, dy)
        n, c, h, w = x.shape
        d_weight, d_bias, d_mean, d_var = (torch.empty(size) for size in (c, c, ctx.branches, ctx.branches))
        ctx.lib.sn_backward(x.data_ptr(), dy.data_ptr(), dx.data_ptr(), DTYPES[x.dtype], ctx.layout, n, c, h * w,
                        weight.data_ptr(), ctx.branches, int(ctx.eval), ctx.groups, workspace.data_ptr(),
                        d_weight.data_ptr(), d_bias.data_ptr(), d_mean.data_ptr(), d_var.data_ptr(),
                        torch.get_num_threads())
        return None, dx, d_weight, d_bias, d_mean, d_var, None, None, None, None, None, None


def switch_norm(lib, x, weight, bias, mean_logits, var_logits, running=(), groups=1, eps=1e-5, ema=(), momentum=0.0):
    """(y, workspace): SN of x (see norms.SwitchNorm2d) and the statistics it used (`batch_statistics`).

    `lib`: from `library_for`; `running`: (running_mean, running_var) in eval mode, else () and the
    BN branch uses `groups` chunks of the batch; `ema`: the buffers the kernel moves by `momentum`
    towards the batch statistics averaged over the groups (training only), or () to leave them.
    """
    n, c = x.shape[:2]
    groups = 1 if running else groups
    workspace = torch.empty(workspace_size(n, c, groups), dtype=torch.float64)
    y = _SwitchNormCPU.apply(lib, x, weight, bias, mean_logits, var_logits, tuple(running), groups, eps, tuple(ema),
                             momentum, workspace)
    return y, workspace


class _GroupNormCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, lib, x, weight, bias, groups, eps):
        n, c, h, w = x.shape
        layout = _layout(x)
        y = _empty_output(x, layout)
        workspace = torch.empty(2 * n * c + 2 * n * groups, dtype=torch.float64)
        lib.gn_forward(x.data_ptr(), y.data_ptr(), DTYPES[x.dtype], layout, n, c, h * w, groups, _ptr(weight),
                       _ptr(bias), eps, workspace.data_ptr(), torch.get_num_threads())
        ctx.save_for_backward(x, weight, workspace)
        ctx.lib, ctx.layout, ctx.groups = lib, layout, groups
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, workspace, dy, dx = _backward_tensors(ctx, dy)
        n, c, h, w = x.shape
        d_weight, d_bias = (None, None) if weight is None else (torch.empty(c), torch.empty(c))
        ctx.lib.gn_backward(x.data_ptr(), dy.data_ptr(), dx.data_ptr(), DTYPES[x.dtype], ctx.layout, n, c, h * w,
                            ctx.groups, _ptr(weight), workspace.data_ptr(), _ptr(d_weight), _ptr(d_bias),
                            torch.get_num_threads())
        return None, dx, d_weight, d_bias, None, None


def group_norm(lib, x, weight, bias, groups, eps):
    """F.group_norm(x, groups, weight, bias, eps) for a 4-D x (`lib` from `library_for`; weight/bias may be None)."""
    return _GroupNormCPU.apply(lib, x, weight, bias, groups, eps)
