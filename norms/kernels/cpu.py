"""SwitchNorm2d's and GroupNorm2d's whole forward and backward on the CPU as two compiled calls each.

Forward: one pass for the per-(n, c) moments, the IN/LN/BN mixing in double, one pass writing y.
Backward: one pass over (x, dy) for the per-(n, c) sums, the closed-form derivative of the mixing
in double, one pass writing dx (sn_cpu.cpp; GN, IN and LN the same way with exact group merges,
gn_cpu.cpp). What backward needs is an (N, C)-sized double workspace besides x. Float32 and bfloat16
inputs, NCHW or channels_last, float32 parameters (`runs`). These are the bodies of the custom
operators of norms/kernels/ops.py, which own the autograd; nothing here records gradients.
"""
import torch

from . import cpu_build

DTYPES = {torch.float32: 0, torch.bfloat16: 1}


def memory_format(x):
    """channels_last when x is laid out so (and not also plainly contiguous), else contiguous_format."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def runs(dtype, param_dtype):
    """Whether the compiled kernels take inputs of `dtype` with parameters of `param_dtype` (None: no parameters)."""
    return dtype in DTYPES and param_dtype in (torch.float32, None)


def available():
    """(True, "") when the library is built and loaded, else (False, why)."""
    lib, why = cpu_build.library()
    return lib is not None, why


def _dense(x):
    """x in its memory format (copied only for other strides), an empty tensor like it, the layout flag (1: CL)."""
    fmt = memory_format(x)
    x = x.contiguous(memory_format=fmt)
    return x, torch.empty_like(x, memory_format=fmt), int(fmt == torch.channels_last)


def _ptr(t):
    return None if t is None else t.data_ptr()  # parameters and buffers: 1-D, contiguous


def workspace_size(n, c, k):
    """Doubles in the SN kernels' workspace (the layout is documented in sn_cpu.cpp)."""
    return 6 + 4 * n * c + 2 * n + 2 * k * c


def batch_statistics(workspace, n, c, k):
    """(mean, var), each (k, C) float64: the BN branch's per-group batch statistics a forward left in `workspace`."""
    bn = workspace[6 + 4 * n * c + 2 * n:].view(2, k, c)
    return bn[0], bn[1]


def switch_norm_forward(x, weight, bias, mean_logits, var_logits, running_mean, running_var, groups, eps):
    """(y, workspace): SN of x (see norms.SwitchNorm2d) with the BN branch from the running buffers when given,
    else from `groups` chunks of the batch; `batch_statistics(workspace, ...)` reads the batch statistics."""
    x, y, layout = _dense(x)
    n, c, h, w = x.shape
    groups = 1 if running_mean is not None else groups
    workspace = torch.empty(workspace_size(n, c, groups), dtype=torch.float64)
    cpu_build.library()[0].sn_forward(
        x.data_ptr(), y.data_ptr(), DTYPES[x.dtype], layout, n, c, h * w, _ptr(weight), _ptr(bias),
        _ptr(mean_logits), _ptr(var_logits), mean_logits.numel(), _ptr(running_mean), _ptr(running_var), groups,
        eps, workspace.data_ptr(), torch.get_num_threads())
    return y, workspace


def _backward_inputs(x, dy):
    """(x, dy, dx, layout): x dense, dy in x's dtype and layout, dx allocated like x."""
    x, dx, layout = _dense(x)
    return x, dy.to(x.dtype).contiguous(memory_format=memory_format(x)), dx, layout


def switch_norm_backward(dy, x, weight, workspace, branches, eval_mode, groups):
    """(dx, d weight, d bias, d mean logits, d var logits) of a `switch_norm_forward` that left `workspace`."""
    x, dy, dx, layout = _backward_inputs(x, dy)
    n, c, h, w = x.shape
    d_weight, d_bias, d_mean, d_var = (torch.empty(size) for size in (c, c, branches, branches))
    cpu_build.library()[0].sn_backward(
        x.data_ptr(), dy.data_ptr(), dx.data_ptr(), DTYPES[x.dtype], layout, n, c, h * w, _ptr(weight), branches,
        int(eval_mode), groups, workspace.data_ptr(), d_weight.data_ptr(), d_bias.data_ptr(), d_mean.data_ptr(),
        d_var.data_ptr(), torch.get_num_threads())
    return dx, d_weight, d_bias, d_mean, d_var


def group_norm_forward(x, weight, bias, groups, eps):
    """(y, workspace): F.group_norm(x, groups, weight, bias, eps) of a 4-D x (weight and bias may be None)."""
    x, y, layout = _dense(x)
    n, c, h, w = x.shape
    workspace = torch.empty(2 * n * c + 2 * n * groups, dtype=torch.float64)
    cpu_build.library()[0].gn_forward(x.data_ptr(), y.data_ptr(), DTYPES[x.dtype], layout, n, c, h * w, groups,
                                      _ptr(weight), _ptr(bias), eps, workspace.data_ptr(), torch.get_num_threads())
    return y, workspace


def group_norm_backward(dy, x, weight, workspace, groups):
    """(dx, d weight, d bias) of a `group_norm_forward`; the parameter gradients are empty without weight."""
    x, dy, dx, layout = _backward_inputs(x, dy)
    n, c, h, w = x.shape
    size = 0 if weight is None else c
    d_weight, d_bias = torch.empty(size), torch.empty(size)
    cpu_build.library()[0].gn_backward(
        x.data_ptr(), dy.data_ptr(), dx.data_ptr(), DTYPES[x.dtype], layout, n, c, h * w, groups, _ptr(weight),
        workspace.data_ptr(), None if weight is None else d_weight.data_ptr(),
        None if weight is None else d_bias.data_ptr(), torch.get_num_threads())
    return dx, d_weight, d_bias
