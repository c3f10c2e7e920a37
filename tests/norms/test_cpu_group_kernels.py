"""The compiled CPU GroupNorm kernels (norms/kernels/gn_cpu.cpp) against torch's F.group_norm in float64."""
import copy

import pytest
import torch
import torch.nn.functional as F

import norms
from norms import GroupNorm2d
from tests.norms.helpers import GN_CPU, LAYOUTS, kernel_step

pytestmark = pytest.mark.usefixtures("compiled_kernels")  # tests/norms/conftest.py: builds or skips


def make_layer(groups, c, affine=True, seed=0, impl="auto"):
    layer = GroupNorm2d(groups, c, affine=affine, impl=impl)
    if affine:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(c, generator=g))
            layer.bias.copy_(torch.randn(c, generator=g))
    return layer


def run(layer, x, dy):
    """(y, dx, parameter grads) of sum(layer(x) * dy), checking the compiled GN kernels ran."""
    return kernel_step(layer, x, dy, GN_CPU)


def run_float64(layer, x, dy):
    """The same quantities from F.group_norm on the float64 values of x, dy and the layer's parameters."""
    params = [p.detach().double().requires_grad_() for p in layer.parameters()]
    x64 = x.detach().double().requires_grad_()
    y = F.group_norm(x64, layer.num_groups, *(params or [None, None]), layer.eps)
    (y * dy.double()).sum().backward()
    return y.detach(), x64.grad, [p.grad for p in params]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape,groups,affine", [
    ((4, 12, 5, 3), 3, True), ((3, 70, 4, 4), 70, True), ((3, 70, 4, 4), 1, False),  # GN, IN, LN
    ((2, 130, 3, 2), 13, True), ((5, 6, 1, 1), 2, True),  # several 64-channel blocks; H*W = 1
    ((2, 20, 41, 39), 4, True)])  # 1599 positions: many float partial sums merged in double
def test_float32_matches_float64_group_norm(layout, shape, groups, affine):
    layer = make_layer(groups, shape[1], affine)
    torch.manual_seed(1)
    x = (torch.randn(shape) * 3 + 1).contiguous(memory_format=LAYOUTS[layout])
    dy = torch.randn(shape)
    want = run_float64(layer, x, dy)
    y, dx, grads = run(layer, x, dy)
    assert y.is_contiguous(memory_format=LAYOUTS[layout]) and dx.is_contiguous(memory_format=LAYOUTS[layout])
    for got, ref in zip([y, dx, *grads], [want[0], want[1], *want[2]], strict=True):
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bfloat16_within_its_rounding(layout):
    layer = make_layer(4, 8)
    torch.manual_seed(2)
    x = (torch.randn(3, 8, 5, 7) * 2 + 1).bfloat16().contiguous(memory_format=LAYOUTS[layout])
    dy = torch.randn(3, 8, 5, 7).bfloat16()
    y64, dx64, grads64 = run_float64(layer, x, dy)
    y, dx, grads = run(layer, x, dy)
    assert y.dtype == dx.dtype == torch.bfloat16
    torch.testing.assert_close(y.double(), y64, rtol=2 ** -7, atol=2 ** -8 * y64.abs().max().item())
    torch.testing.assert_close(dx.double(), dx64, rtol=2 ** -7, atol=2 ** -7 * dx64.abs().max().item())
    for got, ref in zip(grads, grads64, strict=True):
        torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-4)


def test_large_mean_keeps_the_variance():
    layer = make_layer(2, 4)
    torch.manual_seed(3)
    x = 1e4 + torch.randn(4, 4, 8, 8)
    dy = torch.randn_like(x)
    y64, dx64, _ = run_float64(layer, x, dy)
    y, dx, _ = run(layer, x, dy)
    assert (y.double() - y64).abs().max() < 5e-3
    assert ((dx.double() - dx64).abs().max() / dx64.abs().max()) < 5e-3


def test_in_and_ln_from_build_norm_use_the_kernels():
    x = torch.randn(2, 6, 4, 4)
    for kind in ("gn", "in", "ln"):
        layer = norms.build_norm(kind, **({"groups": 3} if kind == "gn" else {}))(6)
        assert type(layer(x).grad_fn).__name__ == GN_CPU, kind


def test_other_inputs_and_settings_take_the_other_paths(monkeypatch):
    layer = make_layer(2, 4)
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    assert type(make_layer(2, 4, impl="reference")(x).grad_fn).__name__ != GN_CPU
    double = copy.deepcopy(layer).double()
    assert type(double(x.double()).grad_fn).__name__ != GN_CPU  # float64: nn.GroupNorm
    assert type(layer(x.transpose(2, 3)).grad_fn).__name__ != GN_CPU  # other strides
    monkeypatch.setenv("NORMS_CPU_KERNELS", "0")
    y = layer(x)
    assert type(y.grad_fn).__name__ != GN_CPU
    torch.testing.assert_close(y, F.group_norm(x, 2, layer.weight, layer.bias, layer.eps))
