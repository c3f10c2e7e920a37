"""A whole-layer kernel against the layer's reference implementation on a small random input.

norms/backends.py runs `check` the first time a process would use a kernel on a device where it has
not been tested (the Triton kernels on CUDA), per layer kind, dtype and layout: forward and backward
of a training and (SN) an eval step, output, input and parameter gradients and running buffers.
"""
import copy

import torch

SHAPE = (4, 16, 7, 5)  # 4 samples in 2 statistics groups, 16 channels in 4 groups, an odd H*W
# largest |kernel - reference| / max(1, largest |reference|) allowed, per input dtype (docs/kernels.md)
TOLERANCE = {torch.float64: 1e-8, torch.float32: 1e-4, torch.bfloat16: 2 ** -5, torch.float16: 2 ** -7}


def _layers(kind, param_dtype, device):
    """(name, layer) pairs to check, with random parameters and buffers."""
    from .groupnorm import GroupNorm2d
    from .switchable import SwitchNorm2d

    gen = torch.Generator().manual_seed(0)
    if kind == "gn":
        layers = [("train", GroupNorm2d(4, SHAPE[1]))]
    else:
        layers = [("train", SwitchNorm2d(SHAPE[1], momentum=0.1, stat_groups=2)),
                  ("eval", SwitchNorm2d(SHAPE[1]).eval())]
    for _, layer in layers:
        with torch.no_grad():
            for t in [*layer.parameters(), *layer.buffers()]:
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
        layer.to(device, param_dtype)
    return layers


def _input(dtype, layout, device, seed):
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = SHAPE
    x = torch.randn(n, c, h, 2 * w if layout == "other" else w, generator=gen) * 2 + 1
    if layout == "other":
        x = x[..., ::2]  # neither NCHW nor channels_last strides
    x = x.to(device, dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def _step(layer, run, x, dy):
    x = x.detach().clone().requires_grad_()
    y = run(layer, x)
    y.backward(dy)
    return {"output": y, "input gradient": x.grad,
            **{f"{name} gradient": p.grad for name, p in layer.named_parameters()},
            **dict(layer.named_buffers())}


def check(kind, backend, device, dtype, layout):
    """None when `backend` agrees with the reference within TOLERANCE[dtype], else what differs and by how much."""
    param_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    tol = TOLERANCE.get(dtype, 2 ** -5)
    x = _input(dtype, layout, device, seed=1)
    dy = _input(dtype, "nchw", device, seed=2)
    with torch.enable_grad():
        for mode, layer in _layers(kind, param_dtype, device):
            kernel = _step(copy.deepcopy(layer), lambda m, t: m._forward_kernels(t, backend), x, dy)
            reference = _step(copy.deepcopy(layer), lambda m, t: m._forward_reference(t), x, dy)
            for name, want in reference.items():
                got, want = kernel[name].double(), want.double()
                error = ((got - want).abs().max() / want.abs().max().clamp(min=1.0)).item()
                if not error <= tol:  # NaN fails too
                    return f"{mode} {name}: relative error {error:.2e} > {tol:g}"
    return None
