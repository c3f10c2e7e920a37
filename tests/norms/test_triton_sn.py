"""SwitchNorm2d's whole-layer Triton kernels (norms/kernels/triton_sn.py) against the float64 oracle.

In Triton's CPU interpreter here, on the GPU where there is one; tests/norms/test_triton_compile.py
checks that the same kernels compile for a GPU.
"""
import copy

import pytest
import torch

import norms
from tests.norms.helpers import DEVICE, SN_TRITON, kernel_step, make_pair, make_x, run_oracle, sn_inputs

FORMATS = {"nchw": False, "channels_last": True}
# float64 to rounding; float32 within 1e-5 (statistics in float32); half precision: the output's rounding
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2 ** -7, torch.float16: 2 ** -9}


@pytest.fixture
def sn(tk):
    return pytest.importorskip("norms.kernels.triton_sn")


def layer_for(shape, dtype, **kwargs):
    """A fused SwitchNorm2d with random parameters and buffers, float64 parameters for float64 input."""
    _, layer = make_pair(shape[1], dtype=torch.float64 if dtype == torch.float64 else torch.float32,
                         momentum=0.2, **kwargs)
    return layer.to(DEVICE)


def run(layer, x, dy):
    """(y, dx, parameter grads) of sum(layer(x) * dy), checking that the whole-layer kernels ran."""
    return kernel_step(layer, x, dy, SN_TRITON)


def check(layer, x, dy, groups, dtype):
    before = copy.deepcopy(layer).cpu().double()
    y64, dx64, grads64, (rm, rv) = run_oracle(before, x.cpu(), dy.cpu(), groups)
    y, dx, grads = run(layer, x, dy)
    assert y.dtype == dx.dtype == dtype
    assert y.stride() == x.stride() and dx.stride() == x.stride()
    tol = TOLERANCE[dtype]
    for name, got, want in zip(["y", "dx", "d weight", "d bias", "d mean logits", "d var logits"],
                               [y, dx, *grads], [y64, dx64, *grads64], strict=True):
        # parameter gradients sum N*H*W rounded half-precision terms: compare them relative to their size
        scale = max(1.0, want.abs().max().item()) if dtype in (torch.bfloat16, torch.float16) else 1.0
        torch.testing.assert_close(got.double().cpu() / scale, want / scale, rtol=tol, atol=tol,
                                   msg=lambda m, name=name: f"{name}: {m}")
    if layer.using_bn:
        buffer_tol = 1e-12 if dtype == torch.float64 else 1e-6
        for got, want in ((layer.running_mean, rm), (layer.running_var, rv)):
            torch.testing.assert_close(got.double().cpu(), want, rtol=buffer_tol, atol=buffer_tol)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape,groups,using_bn,training,dtype", [
    ((4, 5, 3, 7), 2, True, True, torch.float64),
    ((4, 5, 3, 7), 1, True, False, torch.float64),  # eval: the BN branch reads the running buffers
    ((4, 5, 3, 7), 1, False, True, torch.float64),  # IN and LN only
    ((6, 3, 1, 1), 3, True, True, torch.float64),  # H*W = 1: the IN variance is 0; 2 samples per group
    ((2, 5, 2, 1), 1, True, True, torch.float32),
    ((4, 6, 5, 5), 2, True, True, torch.bfloat16),
    ((3, 5, 7, 3), 1, True, True, torch.float16)])
def test_matches_float64_oracle(sn, fmt, shape, groups, using_bn, training, dtype):
    layer = layer_for(shape, dtype, stat_groups=groups, using_bn=using_bn).train(training)
    x = make_x(shape, dtype, FORMATS[fmt])
    dy = make_x(shape, dtype, False, mean=0.0, seed=1)
    check(layer, x, dy, groups, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_over_several_blocks_tiles_and_splits(sn, small_tiles, monkeypatch, fmt):
    """Row kernels over several channel blocks, column kernels over several sample blocks and a partial one."""
    monkeypatch.setattr(sn, "_ROW_BLOCK", 2)
    monkeypatch.setattr(sn, "_COL_BLOCK_C", 2)
    monkeypatch.setattr(sn, "_COL_BLOCK_N", 2)
    shape = (6, 5, 9, 7)
    layer = layer_for(shape, torch.float64, stat_groups=2)
    x = make_x(shape, torch.float64, FORMATS[fmt])
    check(layer, x, make_x(shape, torch.float64, False, mean=0.0, seed=1), 2, torch.float64)


def test_large_mean_is_stable_in_float32(sn):
    """x = 1e4 + unit noise: errors of a few ulps of the mean (5e-3), where E[x^2] - E[x]^2 would lose all."""
    layer = layer_for((4, 4, 8, 8), torch.float32)
    x = make_x((4, 4, 8, 8), torch.float32, True, mean=1e4)
    dy = make_x((4, 4, 8, 8), torch.float32, False, mean=0.0, seed=1)
    y64, dx64, _, _ = run_oracle(copy.deepcopy(layer).cpu().double(), x.cpu(), dy.cpu(), 1)
    y, dx, _ = run(layer, x, dy)
    assert (y.double().cpu() - y64).abs().max() < 5e-3
    assert (dx.double().cpu() - dx64).abs().max() / dx64.abs().max() < 5e-3


def test_recalibrate_averages_the_kernels_batch_statistics(sn):
    """norms.recalibrate: the buffers become the average of every batch's per-group BN statistics."""
    layer = layer_for((4, 4, 3, 5), torch.float64, stat_groups=2)
    batches = [make_x((4, 4, 3, 5), torch.float64, True, mean=s, seed=s) for s in (1, 2, 3)]
    norms.recalibrate(torch.nn.Sequential(layer), batches, num_batches=3)
    means, variances = [], []
    for b in batches:
        flat = b.cpu().double().reshape(2, 2, 4, 15)  # (group, sample, C, H*W)
        mean_in, var_in = flat.mean(-1), flat.var(-1)  # unbiased IN variance, as the released code
        means.append(mean_in.mean(1))
        variances.append(var_in.mean(1) + mean_in.var(1, correction=0))
    torch.testing.assert_close(layer.running_mean.cpu(), torch.stack(means).mean((0, 1)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.running_var.cpu(), torch.stack(variances).mean((0, 1)), rtol=1e-12, atol=1e-12)


def test_sync_layer_without_process_group_uses_the_kernels(sn):
    layer = norms.SyncSwitchNorm2d(5, impl="fused").to(DEVICE)
    y = layer(make_x((4, 5, 3, 3), torch.float32, False))
    assert type(y.grad_fn).__name__ == SN_TRITON


def test_a_training_step_launches_eight_kernels_and_the_ema(sn):
    """Forward+backward: 4 + 4 Triton launches and the two in-place EMA updates; nothing else computes."""
    from benchmarks.launches import layer_launches
    layer = layer_for((4, 6, 5, 5), torch.float32)
    x = make_x((4, 6, 5, 5), torch.float32, True).requires_grad_()
    counts = layer_launches(layer, x, make_x((4, 6, 5, 5), torch.float32, True, mean=0.0, seed=1))
    assert counts["torch"] == {"lerp_": 2}, counts
    assert sorted(counts["triton"]) == sorted(
        ["_moments_kernel", "_sn_rows_kernel", "_sn_bn_kernel", "_sn_apply_kernel", "_grad_sums_kernel",
         "_sn_grad_rows_kernel", "_sn_grad_cols_kernel", "_sn_grad_input_kernel"]), counts
    assert set(counts["triton"].values()) == {1}


@pytest.mark.parametrize("training", [True, False])
def test_opcheck_under_the_interpreter(sn, training):
    args = [t.to(DEVICE) if torch.is_tensor(t) else t for t in sn_inputs("channels_last", training)]
    torch.library.opcheck(norms.kernels.ops.switch_norm_triton, args)
