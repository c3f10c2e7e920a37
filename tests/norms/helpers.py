"""Layers, inputs and float64 comparisons that several test modules of tests/norms share."""
import copy

import torch

from norms import SwitchNorm2d
from tests.norms import reference as oracle

LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"  # where the Triton kernels run: the GPU, else Triton's CPU interpreter


def make_pair(c, dtype=torch.float64, seed=0, **kwargs):
    """(reference, fused) SwitchNorm2d with equal random parameters and buffers."""
    torch.manual_seed(seed)
    ref = SwitchNorm2d(c, impl="reference", **kwargs).to(dtype)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-0.5, 0.5)
        ref.mean_weight.normal_()
        ref.var_weight.normal_()
        if ref.using_bn:
            ref.running_mean.normal_()
            ref.running_var.uniform_(0.5, 2.0)
    fused = copy.deepcopy(ref)
    fused.impl = "fused"
    return ref, fused


def saved_numel(layer, x):
    """Elements the autograd graph of layer(x) keeps for backward (parameters and buffers not counted)."""
    own = {t.data_ptr() for t in [*layer.parameters(), *layer.buffers()]}
    sizes = []

    def pack(t):
        if t.data_ptr() not in own:
            sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x)
    return sum(sizes)


def kernel_step(layer, x, dy, kernel):
    """(y, dx, parameter grads) of sum(layer(x) * dy), checking that the autograd node `kernel` ran."""
    layer.zero_grad()
    x = x.detach().clone().requires_grad_()
    y = layer(x)
    assert type(y.grad_fn).__name__ == kernel
    (y * dy).sum().backward()
    return y.detach(), x.grad, [p.grad.clone() for p in layer.parameters()]


def run_oracle(layer, x, dy, groups):
    """kernel_step's quantities from the float64 oracle, on the float64 values of x, dy and the layer's tensors."""
    params = [p.detach().double().requires_grad_() for p in (layer.weight, layer.bias, layer.mean_weight,
                                                             layer.var_weight)]
    running = (layer.running_mean.double(), layer.running_var.double()) if layer.using_bn else (None, None)
    x64 = x.double().requires_grad_()
    y, rm, rv = oracle.switch_norm(x64, *params, *running, training=layer.training, momentum=layer.momentum,
                                   eps=layer.eps, groups=groups)
    (y * dy.double()).sum().backward()
    return y.detach(), x64.grad, [p.grad for p in params], (rm, rv)


def make_x(shape, dtype, channels_last, mean=1.0, seed=0):
    """A seeded random input on DEVICE, shifted by `mean`, in the given dtype and memory format."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * 2 + mean
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.to(dtype).to(DEVICE).contiguous(memory_format=fmt)


def op_node(op):
    """Name of the autograd node torch gives the outputs of custom operator snorm::`op` (norms/kernels/ops.py)."""
    return f"GeneratedBackwardFor_snorm_{op}_defaultBackward"


SN_CPU, GN_CPU = op_node("switch_norm_cpu"), op_node("group_norm_cpu")
SN_TRITON, GN_TRITON = op_node("switch_norm_triton"), op_node("group_norm_triton")


def sn_inputs(layout, training, branches=3, groups=2, dtype=torch.float32):
    """Seeded arguments of the snorm SN operators: x, weight, bias, branch logits, running stats, groups, eps."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, 5, 3, generator=gen).to(dtype).contiguous(memory_format=LAYOUTS[layout])
    params = [torch.rand(6, generator=gen) + 0.5, torch.randn(6, generator=gen), torch.randn(branches, generator=gen),
              torch.randn(branches, generator=gen)]
    running = [None, None] if training else [torch.randn(6, generator=gen), torch.rand(6, generator=gen) + 0.5]
    return [x.requires_grad_(), *[p.requires_grad_() for p in params], *running, groups, 1e-5]


def gn_inputs(layout, affine, dtype=torch.float32):
    """Seeded arguments of the snorm group-norm operators: x, weight and bias (or None), 3 groups, eps."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 4, 5, generator=gen).to(dtype).contiguous(memory_format=LAYOUTS[layout])
    params = [torch.rand(6, generator=gen).requires_grad_(), torch.randn(6, generator=gen).requires_grad_()]
    return [x.requires_grad_(), *(params if affine else [None, None]), 3, 1e-5]
