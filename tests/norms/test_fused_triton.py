"""The Triton kernels against the float64 oracle: in Triton's CPU interpreter here, on the GPU where there is one.

Shapes are small and odd so that every mask is exercised; `small_tiles` shrinks the tile limits
so that the interpreter also walks several tiles per program and merges several l-splits.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

import norms
from tests.norms import reference as oracle
from tests.norms.helpers import DEVICE, make_x

pytest.importorskip("triton", reason="triton is not installed, so the Triton kernels cannot be tested")

def close(actual, expected, dtype):
    tol = {torch.float64: 1e-12, torch.float32: 1e-5}.get(dtype, 2 ** -7)  # low precision: output rounding
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), rtol=tol, atol=tol)


CASES = [((4, 6, 5, 5), False, torch.float32), ((4, 6, 5, 5), True, torch.float32),
         ((3, 5, 7, 3), True, torch.bfloat16), ((3, 5, 7, 3), False, torch.float16),
         ((2, 3, 4, 4), False, torch.float64)]


def check_primitives(tk, shape, channels_last, dtype):
    x = make_x(shape, dtype, channels_last)
    dy = make_x(shape, dtype, False, mean=0.0, seed=1)  # the gradient need not share x's memory format
    assert norms.kernels.backend(x) is tk
    n, c = shape[:2]
    m, v = tk.nc_moments(x)
    m64, v64 = oracle.nc_moments(x.cpu())
    assert m.dtype == v.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    close(m, m64, max(dtype, torch.float32, key=lambda d: d.itemsize))
    close(v, v64, max(dtype, torch.float32, key=lambda d: d.itemsize))
    gen = torch.Generator().manual_seed(2)
    coef = [torch.randn(n, c, generator=gen, dtype=m.dtype).to(DEVICE) for _ in range(3)]
    y = tk.nc_apply(x, m, coef[0], coef[1])
    assert y.dtype == dtype and y.stride() == x.stride()
    close(y, oracle.nc_apply(x.cpu(), m.cpu(), coef[0].cpu(), coef[1].cpu()), dtype)
    for got, want in zip(tk.nc_grad_sums(x, dy, m), oracle.nc_grad_sums(x.cpu(), dy.cpu(), m.cpu())):
        close(got, want, max(dtype, torch.float32, key=lambda d: d.itemsize))
    dx = tk.nc_grad_input(x, dy, m, *coef)
    assert dx.dtype == dtype and dx.stride() == x.stride()
    close(dx, oracle.nc_grad_input(x.cpu(), dy.cpu(), m.cpu(), *[t.cpu() for t in coef]), dtype)


@pytest.mark.parametrize("shape,channels_last,dtype", CASES)
def test_primitives_match_float64(tk, shape, channels_last, dtype):
    check_primitives(tk, shape, channels_last, dtype)


@pytest.mark.parametrize("shape,channels_last", [((2, 3, 9, 7), False), ((2, 5, 6, 5), True)])
def test_primitives_over_several_tiles_and_splits(tk, small_tiles, shape, channels_last):
    grid, chunk, meta = tk._plan(make_x(shape, torch.float32, channels_last), tk._strides(
        make_x(shape, torch.float32, channels_last)), reduction=True)
    assert grid[1] > 1 and chunk > meta["BLOCK_L"]  # several splits, several tiles in each
    check_primitives(tk, shape, channels_last, torch.float32)


def test_strides_that_do_not_flatten_are_copied(tk):
    x = make_x((2, 3, 5, 8), torch.float32, False)[..., ::2]  # W stride 2, H stride 8: no single l stride
    m, v = tk.nc_moments(x)
    m64, v64 = oracle.nc_moments(x.cpu())
    close(m, m64, torch.float32)
    close(v, v64, torch.float32)


def test_large_mean_moments_are_exact_to_float32(tk):
    x = make_x((2, 4, 9, 9), torch.float32, True, mean=1e4)
    _, v = tk.nc_moments(x)
    torch.testing.assert_close(v.double().cpu(), oracle.nc_moments(x.cpu())[1], rtol=1e-4, atol=0)


def sn_pair(c, **kwargs):
    torch.manual_seed(0)
    ref = norms.SwitchNorm2d(c, impl="reference", momentum=0.2, **kwargs)
    with torch.no_grad():
        for p in ref.parameters():
            p.uniform_(0.5, 1.5) if p.shape == (c,) else p.normal_()
    fused = copy.deepcopy(ref)
    fused.impl = "fused"
    return ref, fused


def grads(fn, params, x, dy):
    """Output, input gradient and gradients of `params` of sum(fn(x) * dy)."""
    for p in params:
        p.grad = None
    x = x.detach().clone().requires_grad_()
    y = fn(x)
    (y * dy).sum().backward()
    return [y.detach(), x.grad, *[p.grad.clone() for p in params]]


@pytest.mark.parametrize("channels_last,dtype,training", [
    (False, torch.float64, True), (True, torch.float64, False), (True, torch.float32, True),
    (False, torch.bfloat16, True)])
def test_switchnorm_forward_backward(tk, channels_last, dtype, training):
    """Triton SN vs the reference SN in float64 on the same input values (upcast), train and eval."""
    ref, fused = sn_pair(5, stat_groups=2)
    param_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    fused = fused.to(DEVICE, param_dtype).train(training)
    ref = ref.double().train(training)
    x = make_x((4, 5, 3, 7), dtype, channels_last)
    dy = make_x((4, 5, 3, 7), dtype, False, mean=0.0, seed=1)
    got = grads(fused, list(fused.parameters()), x, dy)
    assert got[0].dtype == dtype and got[0].is_contiguous(memory_format=torch.channels_last) == channels_last
    want = grads(ref, list(ref.parameters()), x.double().cpu(), dy.double().cpu())
    for a, b in zip(got, want, strict=True):
        # parameter gradients are sums over N*H*W terms of rounded low-precision values: compare relatively
        scale = 1.0 if dtype != torch.bfloat16 else max(1.0, b.abs().max().item())
        close(a / scale, b / scale, dtype)
    close(fused.running_mean, ref.running_mean, param_dtype)
    close(fused.running_var, ref.running_var, param_dtype)


@pytest.mark.parametrize("groups,channels_last", [(2, False), (6, True), (1, True)])
def test_groupnorm_matches_torch(tk, groups, channels_last):
    layer = norms.GroupNorm2d(groups, 6, impl="fused").to(DEVICE, torch.float64)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    x = make_x((3, 6, 5, 3), torch.float64, channels_last)
    dy = make_x((3, 6, 5, 3), torch.float64, channels_last, mean=0.0, seed=1)
    params = [layer.weight, layer.bias]
    got = grads(layer, params, x, dy)
    assert got[0].is_contiguous(memory_format=torch.channels_last) == channels_last
    want = grads(lambda t: F.group_norm(t, groups, layer.weight, layer.bias, layer.eps), params, x.contiguous(), dy)
    for a, b in zip(got, want, strict=True):
        close(a, b, torch.float64)
