"""The fused SN path with the torch-op primitives against the reference SwitchNorm2d and the float64 oracle."""
import copy

import pytest
import torch

import norms
from norms import SwitchNorm2d
from norms.kernels import eager
from tests.norms import reference as oracle
from tests.norms.helpers import make_pair, saved_numel


@pytest.fixture(autouse=True)
def torch_op_primitives(monkeypatch):
    """impl="fused" on the CPU means the torch-op primitives without TRITON_INTERPRET and the compiled kernels."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("NORMS_CPU_KERNELS", "0")  # tests/norms/test_cpu_kernels.py covers them


def step(layer, x, dy):
    """Output, input gradient and parameter gradients of sum(layer(x) * dy)."""
    layer.zero_grad()
    x = x.detach().clone().requires_grad_()
    y = layer(x)
    (y * dy).sum().backward()
    return y.detach(), x.grad, [p.grad.clone() for p in layer.parameters()]


def assert_all_close(a, b, **tol):
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, **tol)


@pytest.mark.parametrize("shape", [(4, 6, 5, 3), (6, 3, 1, 1), (2, 5, 2, 1)])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("using_bn,moving", [(True, True), (True, False), (False, True)])
def test_fused_equals_reference_float64_train_and_eval(shape, groups, using_bn, moving):
    ref, fused = make_pair(shape[1], using_bn=using_bn, stat_groups=groups, using_moving_average=moving,
                           momentum=0.2)
    torch.manual_seed(1)
    for training in (True, True, True, False):  # three EMA steps, then eval on the buffers they left
        ref.train(training)
        fused.train(training)
        x = torch.randn(shape, dtype=torch.float64) * 3 + 1
        dy = torch.randn(shape, dtype=torch.float64)
        got, want = step(fused, x, dy), step(ref, x, dy)
        assert_all_close([got[0], got[1], *got[2]], [want[0], want[1], *want[2]], rtol=1e-10, atol=1e-10)
        assert_all_close(list(fused.buffers()), list(ref.buffers()), rtol=1e-12, atol=1e-12)
    if using_bn and not moving:
        assert torch.equal(fused.running_var, ref.running_var)  # batch-average mode: buffers untouched


@pytest.mark.parametrize("impl", ["reference", "fused"])
@pytest.mark.parametrize("training", [True, False])
def test_both_impls_match_the_float64_oracle(impl, training):
    ref, fused = make_pair(5, stat_groups=2, momentum=0.1)
    layer = fused if impl == "fused" else ref
    layer.train(training)
    x = torch.randn(4, 5, 3, 7, dtype=torch.float64) * 2 - 1
    dy = torch.randn_like(x)
    params = [p.detach().clone().requires_grad_() for p in (layer.weight, layer.bias, layer.mean_weight,
                                                             layer.var_weight)]
    xr = x.clone().requires_grad_()
    y_ref, rm, rv = oracle.switch_norm(xr, *params, layer.running_mean.clone(), layer.running_var.clone(),
                                       training=training, momentum=0.1, groups=2)
    (y_ref * dy).sum().backward()
    y, dx, grads = step(layer, x, dy)
    assert_all_close([y, dx, *grads], [y_ref.detach(), xr.grad, *[p.grad for p in params]], rtol=1e-9, atol=1e-9)
    assert_all_close([layer.running_mean, layer.running_var], [rm, rv], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_channels_last_in_and_out(dtype, tol):
    ref, fused = make_pair(6, dtype=torch.float32)
    x = (torch.randn(4, 6, 5, 7) * 2 + 1).to(dtype).contiguous(memory_format=torch.channels_last)
    dy = torch.randn(4, 6, 5, 7).to(dtype)
    y, dx, grads = step(fused, x, dy)
    assert y.dtype == dtype and dx.dtype == dtype
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert dx.is_contiguous(memory_format=torch.channels_last)
    y_ref, dx_ref, grads_ref = step(ref, x.contiguous(), dy)
    assert_all_close([y.float(), dx.float(), *grads], [y_ref.float(), dx_ref.float(), *grads_ref], rtol=tol, atol=tol)


def test_large_mean_input_is_stable_in_float32():
    """x = 1e4 + unit noise: float32 holds the mean only to ulp(1e4) ~ 1e-3, but the variance must stay exact.

    E[x^2] - E[x]^2 would lose the variance entirely (ulp(1e8) = 8); the fused path's error stays
    within a few ulps of the mean, in the output and in the input gradient.
    """
    ref, fused = make_pair(4, dtype=torch.float32)
    torch.manual_seed(3)
    x = 1e4 + torch.randn(4, 4, 8, 8)
    dy = torch.randn_like(x)
    mean, var = eager.nc_moments(x)
    mean64, var64 = oracle.nc_moments(x)  # the same float32 values, in float64
    torch.testing.assert_close(var.double(), var64, rtol=1e-4, atol=0)
    y, dx, _ = step(fused, x, dy)
    params64 = [p.detach().double().requires_grad_() for p in (fused.weight, fused.bias, fused.mean_weight,
                                                               fused.var_weight)]
    x64 = x.double().requires_grad_()
    y64, _, _ = oracle.switch_norm(x64, *params64, ref.running_mean.double(), ref.running_var.double())
    (y64 * dy.double()).sum().backward()
    y_err = (y.double() - y64).abs().max().item()
    dx_err = ((dx.double() - x64.grad).abs().max() / x64.grad.abs().max()).item()
    print(f"fused float32 vs float64 oracle at mean 1e4: output {y_err:.2e}, input grad (relative) {dx_err:.2e}")
    assert y_err < 5e-3 and dx_err < 5e-3  # 5e-3 = 5 ulps of 1e4 in float32


def test_primitives_match_float64_definitions():
    torch.manual_seed(4)
    x = (torch.randn(3, 5, 4, 6) * 3 + 50).contiguous(memory_format=torch.channels_last)
    dy = torch.randn(3, 5, 4, 6)
    m, v = eager.nc_moments(x)
    m64, v64 = oracle.nc_moments(x)
    torch.testing.assert_close(m.double(), m64, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(v.double(), v64, rtol=1e-5, atol=1e-5)
    coef = [torch.randn(3, 5) for _ in range(3)]
    y = eager.nc_apply(x, m, *coef[:2])
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y.double(), oracle.nc_apply(x, m, *coef[:2]), rtol=1e-5, atol=1e-5)
    for got, want in zip(eager.nc_grad_sums(x, dy, m), oracle.nc_grad_sums(x, dy, m)):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)
    dx = eager.nc_grad_input(x, dy, m, *coef)
    torch.testing.assert_close(dx.double(), oracle.nc_grad_input(x, dy, m, *coef), rtol=1e-5, atol=1e-5)


def test_backward_keeps_only_x_and_per_channel_statistics():
    ref, fused = make_pair(8, dtype=torch.float32, stat_groups=2)
    x = torch.randn(4, 8, 6, 6, requires_grad=True)
    small = x.shape[0] * x.shape[1]
    assert saved_numel(fused, x) <= x.numel() + 5 * small  # x; mean_in, var_in, mean, scale per (n, c)
    assert saved_numel(ref, x) >= 2 * x.numel()  # the reference keeps activation-sized temporaries too


def test_auto_picks_by_device_and_compiler(monkeypatch):
    """With the compiled kernels off (this module's fixture): SN's generic fused path, GN's reference."""
    from norms.backends import choose
    x = torch.randn(2, 4, 3, 3)
    sn, gn = SwitchNorm2d(4), norms.GroupNorm2d(2, 4)
    assert sn.impl == gn.impl == "auto"
    assert choose(sn, x) == "fused_torch"
    assert choose(gn, x) == "reference"  # torch's native CPU group_norm is the faster one
    assert choose(SwitchNorm2d(4, impl="reference"), x) == "reference"
    assert choose(norms.GroupNorm2d(2, 4, impl="fused"), x) == "fused_torch"
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert choose(sn, x) == "reference"  # under torch.compile the compiler fuses the reference


def test_impl_option_errors_and_plumbing():
    message = r"^SwitchNorm2d: impl must be one of 'auto', 'reference', 'fused', got 'fast'$"
    with pytest.raises(ValueError, match=message):
        SwitchNorm2d(4, impl="fast")
    with pytest.raises(ValueError, match="GroupNorm2d: impl must be one of"):
        norms.GroupNorm2d(2, 4).impl = "triton"
    with pytest.raises(ValueError, match="norm 'gn': impl must be one of"):
        norms.build_norm("gn", impl="Fused")
    with pytest.raises(ValueError, match="'impl=fused' does not apply to norm type 'bn'"):
        norms.build_norm("bn", impl="fused")
    for name in ("sn", "syncsn", "gn", "in", "ln"):
        assert norms.build_norm(name, impl="reference")(32).impl == "reference"
    assert "impl='fused'" in repr(SwitchNorm2d(4, impl="fused"))


def test_config_key_norm_impl(tmp_path):
    from configs import load_config

    cfg = load_config(None, ["norm.type=sn", "norm.impl=fused"])
    assert cfg.norm.impl == "fused" and load_config(None).norm.impl == "auto"
    layer = norms.build_norm(**vars(cfg.norm))(8)
    assert isinstance(layer, SwitchNorm2d) and layer.impl == "fused"
    with pytest.raises(ValueError, match="'norm.impl' must be one of 'auto', 'reference', 'fused'"):
        load_config(None, ["norm.impl=triton"])


def test_whole_resnet_fused_equals_reference_float64():
    from models import ResNet

    torch.manual_seed(5)
    fused = ResNet(18, norm=norms.build_norm("sn", impl="fused", stat_groups=2), num_classes=5,
                   small_stem=True, width=8).double()
    ref = copy.deepcopy(fused)
    for m in ref.modules():
        if isinstance(m, SwitchNorm2d):
            m.impl = "reference"
    x = torch.randn(4, 3, 12, 12, dtype=torch.float64)
    dy = torch.randn(4, 5, dtype=torch.float64)
    for model in (fused, ref):
        (model(x) * dy).sum().backward()
    torch.testing.assert_close(fused(x), ref(x), rtol=1e-10, atol=1e-10)
    for (name, p), q in zip(fused.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-9, msg=lambda m, name=name: f"{name}: {m}")
    assert_all_close(list(fused.buffers()), list(ref.buffers()), rtol=1e-12, atol=1e-12)


def test_recalibrate_records_each_batch_once():
    ref, fused = make_pair(4, stat_groups=2)
    batches = [torch.randn(4, 4, 3, 5, dtype=torch.float64) * s + s for s in (1.0, 2.0, 3.0)]
    for layer in (ref, fused):
        norms.recalibrate(torch.nn.Sequential(layer), batches, num_batches=3)
    assert_all_close([fused.running_mean, fused.running_var], [ref.running_mean, ref.running_var],
                     rtol=1e-12, atol=1e-12)
    mean_in = torch.stack([b.mean((2, 3)) for b in batches])  # (batch, N, C)
    torch.testing.assert_close(fused.running_mean, mean_in.mean((0, 1)), rtol=1e-12, atol=1e-12)
