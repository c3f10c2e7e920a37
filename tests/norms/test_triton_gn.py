"""GroupNorm2d's whole-layer Triton kernels (norms/kernels/triton_gn.py) against float64 F.group_norm.

In Triton's CPU interpreter here, on the GPU where there is one; test_triton_compile.py checks that
the kernels compile for a GPU.
"""
import pytest
import torch
import torch.nn.functional as F

import norms
from tests.norms.helpers import DEVICE, GN_TRITON, gn_inputs, make_x

FORMATS = {"nchw": False, "channels_last": True}
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2 ** -7, torch.float16: 2 ** -9}


@pytest.fixture
def gn(tk):
    return pytest.importorskip("norms.kernels.triton_gn")


def layer_for(groups, channels, affine, dtype):
    layer = norms.GroupNorm2d(groups, channels, affine=affine, impl="fused")
    layer = layer.to(DEVICE, torch.float64 if dtype == torch.float64 else torch.float32)
    if affine:
        with torch.no_grad():
            layer.weight.uniform_(0.5, 1.5)
            layer.bias.uniform_(-0.5, 0.5)
    return layer


def grads(fn, params, x, dy, kernel=None):
    """(y, dx, parameter grads) of sum(fn(x) * dy), checking which autograd node made y when `kernel` is given."""
    for p in params:
        p.grad = None
    x = x.detach().clone().requires_grad_()
    y = fn(x)
    assert kernel is None or type(y.grad_fn).__name__ == kernel
    (y * dy).sum().backward()
    return [y.detach(), x.grad, *[p.grad.clone() for p in params]]


def check(layer, x, dy):
    dtype = x.dtype
    params = list(layer.parameters())
    got = grads(layer, params, x, dy, kernel=GN_TRITON)
    assert got[0].dtype == got[1].dtype == dtype
    assert got[0].stride() == x.stride() and got[1].stride() == x.stride()
    params64 = [p.detach().double().cpu().requires_grad_() for p in params]
    weight, bias = params64 or (None, None)
    want = grads(lambda t: F.group_norm(t, layer.num_groups, weight, bias, layer.eps), params64,
                 x.double().cpu(), dy.double().cpu())
    tol = TOLERANCE[dtype]
    for name, a, b in zip(["y", "dx", "d weight", "d bias"], got, want):
        scale = max(1.0, b.abs().max().item()) if dtype in (torch.bfloat16, torch.float16) else 1.0
        torch.testing.assert_close(a.double().cpu() / scale, b / scale, rtol=tol, atol=tol,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape,groups,affine,dtype", [
    ((3, 6, 5, 3), 2, True, torch.float64),
    ((3, 6, 5, 3), 6, True, torch.float64),  # instance norm
    ((3, 6, 5, 3), 1, False, torch.float64),  # layer norm, no affine
    ((2, 4, 1, 1), 2, True, torch.float64),  # H*W = 1
    ((2, 8, 7, 5), 4, True, torch.float32),
    ((2, 8, 7, 5), 2, True, torch.bfloat16),
    ((3, 6, 4, 3), 3, False, torch.float16)])
def test_matches_float64_group_norm(gn, fmt, shape, groups, affine, dtype):
    layer = layer_for(groups, shape[1], affine, dtype)
    check(layer, make_x(shape, dtype, FORMATS[fmt]), make_x(shape, dtype, False, mean=0.0, seed=1))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_over_several_blocks_tiles_and_splits(gn, small_tiles, monkeypatch, fmt):
    """Group kernels over several channel blocks, the column kernel over several sample blocks and a partial one."""
    monkeypatch.setattr(gn, "_BLOCK", 2)
    monkeypatch.setattr(gn, "_COL_BLOCK_C", 2)
    monkeypatch.setattr(gn, "_COL_BLOCK_N", 2)
    shape = (5, 10, 9, 7)
    layer = layer_for(2, 10, True, torch.float64)
    check(layer, make_x(shape, torch.float64, FORMATS[fmt]), make_x(shape, torch.float64, False, mean=0.0, seed=1))


def test_large_mean_is_stable_in_float32(gn):
    """x = 1e4 + unit noise: errors of a few ulps of the mean (5e-3), where E[x^2] - E[x]^2 would lose all."""
    layer = layer_for(2, 4, True, torch.float32)
    x = make_x((4, 4, 8, 8), torch.float32, True, mean=1e4)
    dy = make_x((4, 4, 8, 8), torch.float32, False, mean=0.0, seed=1)
    y, dx, *_ = grads(layer, list(layer.parameters()), x, dy)
    weight, bias = (p.detach().double().cpu() for p in layer.parameters())
    x64 = x.double().cpu().requires_grad_()
    y64 = F.group_norm(x64, 2, weight, bias, layer.eps)
    (y64 * dy.double().cpu()).sum().backward()
    assert (y.double().cpu() - y64).abs().max() < 5e-3
    assert (dx.double().cpu() - x64.grad).abs().max() / x64.grad.abs().max() < 5e-3


@pytest.mark.parametrize("affine", [True, False])
def test_a_training_step_launches_seven_kernels(gn, affine):
    """Forward: moments, groups, apply. Backward: gradient sums, groups, columns (affine only), input gradient."""
    from benchmarks.launches import layer_launches
    layer = layer_for(2, 6, affine, torch.float32)
    x = make_x((4, 6, 5, 5), torch.float32, True).requires_grad_()
    counts = layer_launches(layer, x, make_x((4, 6, 5, 5), torch.float32, True, mean=0.0, seed=1))
    expected = ["_moments_kernel", "_gn_groups_kernel", "_apply_kernel", "_grad_sums_kernel",
                "_gn_grad_groups_kernel", "_grad_input_kernel"] + (["_gn_columns_kernel"] if affine else [])
    assert counts["torch"] == {} and sorted(counts["triton"]) == sorted(expected), counts
    assert set(counts["triton"].values()) == {1}


@pytest.mark.parametrize("affine", [True, False])
def test_opcheck_under_the_interpreter(gn, affine):
    args = [t.to(DEVICE) if torch.is_tensor(t) else t for t in gn_inputs("nchw", affine)]
    torch.library.opcheck(norms.kernels.ops.group_norm_triton, args)
