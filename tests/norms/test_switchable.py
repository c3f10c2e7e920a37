"""SwitchNorm2d against the float64 reference, torch's own IN/LN/BN layers, and itself on chunks."""
import pytest
import torch
import torch.nn.functional as F

from norms import SwitchNorm2d
from tests.norms.reference import switch_norm


def make_sn(c, groups=1, using_bn=True, seed=0, momentum=0.003, dtype=torch.float64):
    torch.manual_seed(seed)
    sn = SwitchNorm2d(c, momentum=momentum, using_bn=using_bn, stat_groups=groups).to(dtype)
    with torch.no_grad():
        sn.weight.uniform_(0.5, 1.5)
        sn.bias.uniform_(-0.5, 0.5)
        sn.mean_weight.normal_()
        sn.var_weight.normal_()
        if using_bn:
            sn.running_mean.normal_()
            sn.running_var.uniform_(0.5, 2.0)
    return sn


def run_reference(sn, x, training):
    params = [p.detach().clone().requires_grad_() for p in (sn.weight, sn.bias, sn.mean_weight, sn.var_weight)]
    rm = sn.running_mean.clone() if sn.using_bn else None
    rv = sn.running_var.clone() if sn.using_bn else None
    xr = x.detach().clone().requires_grad_()
    y, rm, rv = switch_norm(xr, *params, rm, rv, training=training, momentum=sn.momentum, eps=sn.eps,
                            groups=sn.stat_groups)
    return xr, params, y, rm, rv


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("using_bn", [True, False])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("shape", [(4, 6, 5, 3), (6, 3, 1, 1), (2, 5, 2, 1)])
def test_matches_float64_reference(training, using_bn, groups, shape):
    sn = make_sn(shape[1], groups=groups, using_bn=using_bn)
    sn.train(training)
    x = torch.randn(*shape, dtype=torch.float64) * 3 + 1
    dy = torch.randn(*shape, dtype=torch.float64)
    xr, params, y_ref, rm_ref, rv_ref = run_reference(sn, x, training)
    (y_ref * dy).sum().backward()
    x = x.requires_grad_()
    y = sn(x)
    (y * dy).sum().backward()
    assert not torch.isnan(y).any()
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-9, atol=1e-9)
    for ours, ref in zip((sn.weight, sn.bias, sn.mean_weight, sn.var_weight), params):
        torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-9, atol=1e-9)
    if using_bn:
        torch.testing.assert_close(sn.running_mean, rm_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(sn.running_var, rv_ref, rtol=1e-12, atol=1e-12)
    else:
        assert not hasattr(sn, "running_mean") or sn.running_mean is None


def test_public_api_shapes_and_defaults():
    sn = SwitchNorm2d(7)
    assert sn.momentum == 0.003 and sn.eps == 1e-5 and sn.using_moving_average and sn.using_bn
    shapes = {k: tuple(v.shape) for k, v in sn.state_dict().items()}
    assert shapes == {"weight": (7,), "bias": (7,), "mean_weight": (3,), "var_weight": (3,),
                      "running_mean": (7,), "running_var": (7,)}
    no_bn = SwitchNorm2d(7, using_bn=False, last_gamma=True)
    shapes = {k: tuple(v.shape) for k, v in no_bn.state_dict().items()}
    assert shapes == {"weight": (7,), "bias": (7,), "mean_weight": (2,), "var_weight": (2,)}
    assert torch.equal(no_bn.weight, torch.zeros(7))


def test_gradcheck():
    sn = make_sn(3, groups=2)
    x = torch.randn(4, 3, 3, 2, dtype=torch.float64, requires_grad=True)

    def f(x, w, b, mw, vw):
        sn.weight.data, sn.bias.data = w, b
        return torch.func.functional_call(sn, {"weight": w, "bias": b, "mean_weight": mw, "var_weight": vw,
                                               "running_mean": sn.running_mean, "running_var": sn.running_var}, (x,))

    params = [p.detach().clone().requires_grad_() for p in (sn.weight, sn.bias, sn.mean_weight, sn.var_weight)]
    assert torch.autograd.gradcheck(f, (x, *params))
    sn.eval()
    assert torch.autograd.gradcheck(f, (x, *params))


def one_hot(sn, branch):
    with torch.no_grad():
        for logits in (sn.mean_weight, sn.var_weight):
            logits.fill_(-1e4)
            logits[branch] = 0.0


def correction(x, dims):
    """Extra variance of the released estimator: mean of (per-(n,c) biased var) / (H*W - 1) over `dims`."""
    hw = x.shape[2] * x.shape[3]
    return x.var(dim=(2, 3), correction=0).mean(dims, keepdim=True)[..., None, None] / (hw - 1)


def test_one_hot_reduces_to_torch_instance_norm():
    x = torch.randn(4, 5, 6, 3, dtype=torch.float64)
    sn = make_sn(5)
    one_hot(sn, 0)
    hw = 18
    # unbiased var = biased * hw/(hw-1): IN(x; eps') * sqrt((hw-1)/hw) with eps' = eps*(hw-1)/hw
    ref = F.instance_norm(x, eps=sn.eps * (hw - 1) / hw) * ((hw - 1) / hw) ** 0.5
    ref = ref * sn.weight[:, None, None] + sn.bias[:, None, None]
    torch.testing.assert_close(sn(x), ref, rtol=1e-10, atol=1e-10)


def test_one_hot_reduces_to_torch_layer_norm():
    x = torch.randn(4, 5, 6, 3, dtype=torch.float64)
    sn = make_sn(5)
    one_hot(sn, 1)
    ln = F.group_norm(x, 1, eps=0.0)  # biased LN over (C, H, W), no eps
    biased_var = x.var(dim=(1, 2, 3), correction=0, keepdim=True)
    factor = (biased_var / (biased_var + correction(x, 1) + sn.eps)).sqrt()
    ref = ln * factor * sn.weight[:, None, None] + sn.bias[:, None, None]
    torch.testing.assert_close(sn(x), ref, rtol=1e-10, atol=1e-10)


def test_one_hot_reduces_to_torch_batch_norm_train_and_eval():
    x = torch.randn(4, 5, 6, 3, dtype=torch.float64)
    sn = make_sn(5, momentum=0.1)
    bn = torch.nn.BatchNorm2d(5, eps=sn.eps, momentum=0.1).double()
    bn.running_mean.copy_(sn.running_mean)
    one_hot(sn, 2)
    biased_var = x.var(dim=(0, 2, 3), correction=0)[:, None, None]
    extra = correction(x, 0)[0]
    ref = bn(x) * (((biased_var + sn.eps) / (biased_var + extra + sn.eps)).sqrt())
    ref = ref * sn.weight[:, None, None] + sn.bias[:, None, None]
    torch.testing.assert_close(sn(x), ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(sn.running_mean, bn.running_mean, rtol=1e-12, atol=1e-12)
    sn.eval()
    ref_eval = (x - sn.running_mean[:, None, None]) / (sn.running_var[:, None, None] + sn.eps).sqrt()
    ref_eval = ref_eval * sn.weight[:, None, None] + sn.bias[:, None, None]
    torch.testing.assert_close(sn(x), ref_eval, rtol=1e-10, atol=1e-10)


def test_stat_groups_equal_separate_calls_on_chunks():
    k = 3
    grouped = make_sn(4, groups=k, seed=1)
    single = make_sn(4, groups=1, seed=1)
    x = torch.randn(6, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    dy = torch.randn_like(x)
    (grouped(x) * dy).sum().backward()
    y_grouped = grouped(x.detach())
    xs = x.detach().clone().requires_grad_()
    start_rm, start_rv = single.running_mean.clone(), single.running_var.clone()
    outs, means, vars_ = [], [], []
    for chunk in xs.chunk(k):
        single.running_mean.copy_(start_rm)
        single.running_var.copy_(start_rv)
        outs.append(single(chunk))
        means.append(single.running_mean.clone())
        vars_.append(single.running_var.clone())
    y_single = torch.cat(outs)
    (y_single * dy).sum().backward()
    torch.testing.assert_close(y_grouped, y_single.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, xs.grad, rtol=1e-10, atol=1e-10)
    for a, b in zip((grouped.weight, grouped.bias, grouped.mean_weight, grouped.var_weight),
                    (single.weight, single.bias, single.mean_weight, single.var_weight)):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-10)
    # one grouped step moves the EMA toward the average of the chunks' statistics
    fresh = make_sn(4, groups=k, seed=1)
    fresh(x.detach())
    torch.testing.assert_close(fresh.running_mean, torch.stack(means).mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fresh.running_var, torch.stack(vars_).mean(0), rtol=1e-12, atol=1e-12)


def test_indivisible_batch_is_a_clear_error():
    sn = SwitchNorm2d(4, stat_groups=4)
    with pytest.raises(ValueError, match="stat_groups=4"):
        sn(torch.randn(6, 4, 3, 3))


def test_hw_one_defined_and_finite():
    sn = make_sn(3)
    x = torch.randn(5, 3, 1, 1, dtype=torch.float64, requires_grad=True)
    y = sn(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert torch.isfinite(sn.running_var).all()


def test_batch_average_mode_leaves_buffers_untouched():
    sn = SwitchNorm2d(3, using_moving_average=False)
    sn(torch.randn(4, 3, 5, 5) * 4 + 2)
    assert torch.equal(sn.running_mean, torch.zeros(3)) and torch.equal(sn.running_var, torch.ones(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_keeps_format_and_values(dtype):
    sn = make_sn(8, dtype=torch.float32)
    x = (torch.randn(4, 8, 6, 5) * 2 + 1).to(dtype)
    y = sn(x)
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    y_cl = sn(x_cl)
    assert y_cl.dtype == dtype
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    y_cl.float().sum().backward()
    assert x_cl.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_cl, y, rtol=1e-5, atol=1e-5)


def test_low_precision_stats_are_float32():
    sn = make_sn(4, dtype=torch.float32)
    x = torch.randn(4, 4, 8, 8) * 0.1 + 100.0  # large mean: float32 stats needed
    y16 = sn(x.bfloat16())
    y32 = sn(x.bfloat16().float())
    torch.testing.assert_close(y16.float(), y32, rtol=2e-2, atol=2e-2)
