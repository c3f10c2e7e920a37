"""The compiled CPU kernels and the Triton kernels as `torch.library` custom operators (namespace `snorm`).

As operators with registered fake (meta) implementations and autograd, they stay in a torch.compile
graph as single nodes, so the compiler neither breaks the graph at them nor traces into ctypes or
Triton launchers. Each forward returns what its backward reads (a workspace, or statistics) and the
batch statistics; running buffers are never written inside an operator: the layer moves them with
plain torch ops. The CPU operators are registered for the CPU only, so the dispatcher refuses other
devices; the Triton operators run wherever Triton runs the tensors (CUDA, or the CPU under
TRITON_INTERPRET=1). Triton is imported at the first Triton call, the C++ kernels compiled at the
first CPU call.
"""
from typing import Optional

import torch
from torch import Tensor

from . import cpu

_F64 = torch.float64


def _acc(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _like(x):
    """An empty tensor in x's memory format, as the kernels allocate their outputs."""
    return torch.empty_like(x, memory_format=cpu.memory_format(x))


def _triton(name):
    from . import _kernels
    _kernels()  # triton_nc first: it decides whether the kernels are interpreted
    from . import triton_gn, triton_sn
    return {"sn": triton_sn, "gn": triton_gn}[name]


# ----- SwitchNorm2d on the CPU -------------------------------------------------------------------

@torch.library.custom_op("snorm::switch_norm_cpu", mutates_args=(), device_types="cpu")
def switch_norm_cpu(x: Tensor, weight: Tensor, bias: Tensor, mean_logits: Tensor, var_logits: Tensor,
                    running_mean: Optional[Tensor], running_var: Optional[Tensor], groups: int,
                    eps: float) -> tuple[Tensor, Tensor]:
    """(y, workspace) of norms.kernels.cpu.switch_norm_forward."""
    return cpu.switch_norm_forward(x, weight, bias, mean_logits, var_logits, running_mean, running_var, groups, eps)


@switch_norm_cpu.register_fake
def _(x, weight, bias, mean_logits, var_logits, running_mean, running_var, groups, eps):
    n, c = x.shape[:2]
    k = 1 if running_mean is not None else groups
    return _like(x), x.new_empty(cpu.workspace_size(n, c, k), dtype=_F64)


@torch.library.custom_op("snorm::switch_norm_cpu_backward", mutates_args=(), device_types="cpu")
def switch_norm_cpu_backward(dy: Tensor, x: Tensor, weight: Tensor, workspace: Tensor, branches: int,
                             eval_mode: bool, groups: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dx, d weight, d bias, d mean logits, d var logits) of norms.kernels.cpu.switch_norm_backward."""
    return cpu.switch_norm_backward(dy, x, weight, workspace, branches, eval_mode, groups)


@switch_norm_cpu_backward.register_fake
def _(dy, x, weight, workspace, branches, eval_mode, groups):
    c = x.shape[1]
    return (_like(x), *(x.new_empty(size, dtype=torch.float32) for size in (c, c, branches, branches)))


def _sn_cpu_setup(ctx, inputs, output):
    x, weight, _, mean_logits, _, running_mean, _, groups, _ = inputs
    ctx.save_for_backward(x, weight, output[1])
    ctx.branches, ctx.eval_mode = mean_logits.shape[0], running_mean is not None
    ctx.groups = 1 if ctx.eval_mode else groups
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the statistics


def _sn_cpu_backward(ctx, dy, _):
    x, weight, workspace = ctx.saved_tensors
    grads = switch_norm_cpu_backward(dy, x, weight, workspace, ctx.branches, ctx.eval_mode, ctx.groups)
    return (*grads, None, None, None, None)


switch_norm_cpu.register_autograd(_sn_cpu_backward, setup_context=_sn_cpu_setup)


# ----- SwitchNorm2d with Triton ------------------------------------------------------------------

@torch.library.custom_op("snorm::switch_norm_triton", mutates_args=())
def switch_norm_triton(x: Tensor, weight: Tensor, bias: Tensor, mean_logits: Tensor, var_logits: Tensor,
                       running_mean: Optional[Tensor], running_var: Optional[Tensor], groups: int,
                       eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, stats, rows, bn) of norms.kernels.triton_sn.forward."""
    x = x.contiguous(memory_format=cpu.memory_format(x))
    return _triton("sn").forward(x, weight, bias, mean_logits, var_logits, running_mean, running_var, groups, eps)


@switch_norm_triton.register_fake
def _(x, weight, bias, mean_logits, var_logits, running_mean, running_var, groups, eps):
    n, c = x.shape[:2]
    acc = _acc(x)
    batch_bn = mean_logits.shape[0] == 3 and running_mean is None
    bn = x.new_empty((groups, 2, c) if batch_bn else (0,), dtype=acc)
    return _like(x), x.new_empty((2, n, c), dtype=acc), x.new_empty((n, 2), dtype=acc), bn


@torch.library.custom_op("snorm::switch_norm_triton_backward", mutates_args=())
def switch_norm_triton_backward(dy: Tensor, x: Tensor, stats: Tensor, rows: Tensor, weight: Tensor,
                                mean_logits: Tensor, var_logits: Tensor, running_mean: Optional[Tensor],
                                running_var: Optional[Tensor], bn: Tensor, groups: int,
                                eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dx, d weight, d bias, d mean logits, d var logits) of norms.kernels.triton_sn.backward."""
    return _triton("sn").backward(dy, x, stats, rows, weight, mean_logits, var_logits, running_mean, running_var,
                                  bn, groups, eps)


@switch_norm_triton_backward.register_fake
def _(dy, x, stats, rows, weight, mean_logits, var_logits, running_mean, running_var, bn, groups, eps):
    return (_like(x), torch.empty_like(weight), torch.empty_like(weight), torch.empty_like(mean_logits),
            torch.empty_like(var_logits))


def _sn_triton_setup(ctx, inputs, output):
    x, weight, bias, mean_logits, var_logits, running_mean, running_var, groups, eps = inputs
    _, stats, rows, bn = output
    ctx.save_for_backward(x, stats, rows, weight, mean_logits, var_logits, running_mean, running_var, bn)
    ctx.groups, ctx.eps, ctx.bias_dtype = groups, eps, bias.dtype
    ctx.mark_non_differentiable(stats, rows, bn)
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the statistics


def _sn_triton_backward(ctx, dy, *_):
    x, stats, rows, weight, mean_logits, var_logits, running_mean, running_var, bn = ctx.saved_tensors
    dx, d_weight, d_bias, d_mean, d_var = switch_norm_triton_backward(
        dy, x, stats, rows, weight, mean_logits, var_logits, running_mean, running_var, bn, ctx.groups, ctx.eps)
    return dx, d_weight, d_bias.to(ctx.bias_dtype), d_mean, d_var, None, None, None, None


switch_norm_triton.register_autograd(_sn_triton_backward, setup_context=_sn_triton_setup)


# ----- GroupNorm2d on the CPU --------------------------------------------------------------------

@torch.library.custom_op("snorm::group_norm_cpu", mutates_args=(), device_types="cpu")
def group_norm_cpu(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], groups: int,
                   eps: float) -> tuple[Tensor, Tensor]:
    """(y, workspace) of norms.kernels.cpu.group_norm_forward."""
    return cpu.group_norm_forward(x, weight, bias, groups, eps)


@group_norm_cpu.register_fake
def _(x, weight, bias, groups, eps):
    n, c = x.shape[:2]
    return _like(x), x.new_empty(2 * n * c + 2 * n * groups, dtype=_F64)


@torch.library.custom_op("snorm::group_norm_cpu_backward", mutates_args=(), device_types="cpu")
def group_norm_cpu_backward(dy: Tensor, x: Tensor, weight: Optional[Tensor], workspace: Tensor,
                            groups: int) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, d weight, d bias) of norms.kernels.cpu.group_norm_backward (empty gradients without weight)."""
    return cpu.group_norm_backward(dy, x, weight, workspace, groups)


@group_norm_cpu_backward.register_fake
def _(dy, x, weight, workspace, groups):
    size = 0 if weight is None else x.shape[1]
    return _like(x), x.new_empty(size, dtype=torch.float32), x.new_empty(size, dtype=torch.float32)


def _gn_cpu_setup(ctx, inputs, output):
    x, weight, _, groups, _ = inputs
    ctx.save_for_backward(x, weight, output[1])
    ctx.groups = groups
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the statistics


def _gn_cpu_backward(ctx, dy, _):
    x, weight, workspace = ctx.saved_tensors
    dx, d_weight, d_bias = group_norm_cpu_backward(dy, x, weight, workspace, ctx.groups)
    return dx, *((None, None) if weight is None else (d_weight, d_bias)), None, None


group_norm_cpu.register_autograd(_gn_cpu_backward, setup_context=_gn_cpu_setup)


# ----- GroupNorm2d with Triton -------------------------------------------------------------------

@torch.library.custom_op("snorm::group_norm_triton", mutates_args=())
def group_norm_triton(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], groups: int,
                      eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(y, mean, rstd) of norms.kernels.triton_gn.forward."""
    x = x.contiguous(memory_format=cpu.memory_format(x))
    return _triton("gn").forward(x, weight, bias, groups, eps)


@group_norm_triton.register_fake
def _(x, weight, bias, groups, eps):
    n, c = x.shape[:2]
    acc = _acc(x)
    return _like(x), x.new_empty((n, c), dtype=acc), x.new_empty((n, groups), dtype=acc)


@torch.library.custom_op("snorm::group_norm_triton_backward", mutates_args=())
def group_norm_triton_backward(dy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, weight: Optional[Tensor],
                               groups: int) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, d weight, d bias) of norms.kernels.triton_gn.backward (empty gradients without weight)."""
    return _triton("gn").backward(dy, x, mean, rstd, weight, groups)


@group_norm_triton_backward.register_fake
def _(dy, x, mean, rstd, weight, groups):
    if weight is None:
        return _like(x), mean.new_empty(0), mean.new_empty(0)
    return _like(x), torch.empty_like(weight), torch.empty_like(weight)


def _gn_triton_setup(ctx, inputs, output):
    x, weight, bias, groups, _ = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, mean, rstd, weight)
    ctx.groups, ctx.bias_dtype = groups, None if bias is None else bias.dtype
    ctx.mark_non_differentiable(mean, rstd)
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the statistics


def _gn_triton_backward(ctx, dy, *_):
    x, mean, rstd, weight = ctx.saved_tensors
    dx, d_weight, d_bias = group_norm_triton_backward(dy, x, mean, rstd, weight, ctx.groups)
    if weight is None:
        return dx, None, None, None, None
    return dx, d_weight, d_bias.to(ctx.bias_dtype), None, None


group_norm_triton.register_autograd(_gn_triton_backward, setup_context=_gn_triton_setup)


# ----- what the layers call ----------------------------------------------------------------------

def switch_norm(backend, x, weight, bias, mean_logits, var_logits, running_mean, running_var, groups, eps):
    """(y, batch statistics) of SN with `backend` 'cpu_kernels' or 'triton'.

    The batch statistics are the BN branch's (mean, var), each (groups, C), in training with a BN
    branch (running_mean None, three logits); otherwise None.
    """
    batch_bn = running_mean is None and mean_logits.shape[0] == 3
    x = x.contiguous(memory_format=cpu.memory_format(x))  # other strides: one copy, so outputs are dense
    if backend == "cpu_kernels":
        y, workspace = switch_norm_cpu(x, weight, bias, mean_logits, var_logits, running_mean, running_var, groups,
                                       eps)
        return y, cpu.batch_statistics(workspace, x.shape[0], x.shape[1], groups) if batch_bn else None
    y, _, _, bn = switch_norm_triton(x, weight, bias, mean_logits, var_logits, running_mean, running_var, groups, eps)
    return y, (bn[:, 0], bn[:, 1]) if batch_bn else None


def group_norm(backend, x, weight, bias, groups, eps):
    """F.group_norm(x, groups, weight, bias, eps) with `backend` 'cpu_kernels' or 'triton'."""
    op = group_norm_cpu if backend == "cpu_kernels" else group_norm_triton
    return op(x.contiguous(memory_format=cpu.memory_format(x)), weight, bias, groups, eps)[0]
