"""Test-time statistics of BN, SN and GN against float64 references written from the definitions; AdaBN's
population statistics; the declarations adaptation reads."""
import random

import pytest
import torch
import torch.nn as nn

import norms
from norms import adaptation
from tests.norms import reference

SHAPES = [(1, 3, 1, 1), (1, 5, 2, 3), (2, 7, 1, 1), (3, 4, 5, 5), (5, 9, 3, 7), (7, 16, 2, 2)]
rng = random.Random(14)
SHAPES += [(rng.randint(1, 9), rng.randint(1, 33), rng.randint(1, 9), rng.randint(1, 9)) for _ in range(6)]


def _randomized(layer, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if p.dim() == 1 and p is layer.weight else 0.0))
        if getattr(layer, "running_mean", None) is not None:
            layer.running_mean.copy_(torch.randn(layer.running_mean.shape, generator=g))
            layer.running_var.copy_(torch.rand(layer.running_var.shape, generator=g) + 0.5)
    return layer.eval()


def _input(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3 + 1


def _close(actual, expected, x, min_var):
    """Float32 against float64: x's rounding (|x| * 2^-23) amplified by the largest 1/sqrt(var + eps)."""
    amplification = (min_var + 1e-5) ** -0.5
    atol = 1e-5 + 4 * 2.0 ** -23 * x.abs().max().item() * amplification * 2
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=atol)


def _bn_reference(x, weight, bias, mean, var, eps=1e-5):
    x = x.double()
    c = lambda t: t.double().view(1, -1, 1, 1)  # noqa: E731
    return (x - c(mean)) / (c(var) + eps).sqrt() * c(weight) + c(bias)


def _moments(x):
    """Float64 per-channel mean, biased and unbiased variance over (N, H, W) by the two-pass definition."""
    flat = x.double().transpose(0, 1).reshape(x.shape[1], -1)
    mean = flat.sum(1) / flat.shape[1]
    sq = ((flat - mean[:, None]) ** 2).sum(1)
    return mean, sq / flat.shape[1], sq / max(flat.shape[1] - 1, 1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cls", [norms.BatchNorm2d, norms.SyncBatchNorm2d])
def test_bn_prediction_time_statistics_are_the_test_batch_s_own(shape, cls):
    layer = _randomized(cls(shape[1]), 1)
    buffers = [b.clone() for b in layer.buffers()]
    x = _input(shape, 2)
    with adaptation.use_test_statistics(layer) as count:
        y = layer(x)
    mean, biased, _ = _moments(x)
    assert count == 1
    _close(y, _bn_reference(x, layer.weight, layer.bias, mean, biased), x, biased.min().item())
    assert all(torch.equal(a, b) for a, b in zip(buffers, layer.buffers()))
    assert layer.test_statistics is None and torch.equal(layer(x), nn.functional.batch_norm(
        x, layer.running_mean, layer.running_var, layer.weight, layer.bias, False, 0.0, layer.eps))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("prior", [0.0, 1.0, 16.0, 1e6])
def test_bn_prior_mixes_source_and_batch_statistics(shape, prior):
    layer = _randomized(norms.BatchNorm2d(shape[1]), 3)
    x = _input(shape, 4)
    with adaptation.use_test_statistics(layer, prior=prior):
        y = layer(x)
    mean, _, unbiased = _moments(x)
    n = shape[0]
    source = prior / (prior + n)
    mixed_mean = source * layer.running_mean.double() + n / (prior + n) * mean
    mixed_var = source * layer.running_var.double() + n / (prior + n) * unbiased
    _close(y, _bn_reference(x, layer.weight, layer.bias, mixed_mean, mixed_var), x, mixed_var.min().item())


def _sn(c, using_bn=True, impl="auto"):
    return _randomized(norms.SwitchNorm2d(c, using_bn=using_bn, impl=impl), 5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("impl", ["auto", "reference"])
def test_sn_prediction_time_statistics_change_the_bn_branch_only(shape, impl):
    layer = _sn(shape[1], impl=impl)
    buffers = [b.clone() for b in layer.buffers()]
    x = _input(shape, 6)
    with adaptation.use_test_statistics(layer):
        y = layer(x)
    args = [t.detach().double() for t in (layer.weight, layer.bias, layer.mean_weight, layer.var_weight)]
    # training-mode reference = BN branch from the batch, IN and LN from each sample
    expected, _, _ = reference.switch_norm(x.double(), *args, layer.running_mean.double(),
                                           layer.running_var.double(), training=True)
    _close(y, expected, x, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(buffers, layer.buffers()))
    # with the BN branch switched off by its logits, the adapted layer is the source layer: only BN moved
    with torch.no_grad():
        layer.mean_weight[2] = layer.var_weight[2] = -1e4
    with adaptation.use_test_statistics(layer):
        adapted = layer(x)
    torch.testing.assert_close(adapted, layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES[:6])
def test_sn_prior_mixes_the_bn_branch(shape):
    layer = _sn(shape[1])
    x = _input(shape, 7)
    prior, n = 16.0, shape[0]
    with adaptation.use_test_statistics(layer, prior=prior):
        y = layer(x)
    flat = x.double().reshape(n, shape[1], -1)
    mean_in = flat.mean(-1)
    var_in = flat.var(-1) if flat.shape[-1] > 1 else torch.zeros_like(mean_in)
    mean_bn = mean_in.mean(0)
    var_bn = (var_in + mean_in ** 2).mean(0) - mean_bn ** 2
    w = prior / (prior + n)
    mixed = (w * layer.running_mean.double() + (1 - w) * mean_bn, w * layer.running_var.double() + (1 - w) * var_bn)
    args = [t.detach().double() for t in (layer.weight, layer.bias, layer.mean_weight, layer.var_weight)]
    expected, _, _ = reference.switch_norm(x.double(), *args, *mixed, training=False)
    _close(y, expected, x, 0.0)


@pytest.mark.parametrize("shape", SHAPES[:8])
@pytest.mark.parametrize("build", [lambda c: norms.GroupNorm2d(1, c), lambda c: norms.GroupNorm2d(c, c),
                                   lambda c: _sn(c, using_bn=False)])
def test_layers_without_batch_statistics_are_unchanged_bitwise(shape, build):
    layer = _randomized(build(shape[1]), 8)
    model = nn.Sequential(layer)
    x = _input(shape, 9)
    source = model(x)
    for prior in (None, 16.0):
        with adaptation.use_test_statistics(model, prior=prior) as count:
            assert count == 0
            assert torch.equal(model(x), source)
    assert adaptation.statistics_layers(model) == []
    assert adaptation.estimate_population(model, [x]) == shape[0] and torch.equal(model(x), source)


def test_adabn_sets_the_population_statistics_of_every_layer_s_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), _randomized(norms.BatchNorm2d(6), 1), nn.ReLU(),
                          nn.Conv2d(6, 5, 1), _sn(5), nn.ReLU(), nn.Conv2d(5, 4, 1), norms.GroupNorm2d(2, 4)).eval()
    batches = [torch.randn(n, 3, h, h) * 2 + 0.5 for n, h in ((3, 5), (1, 5), (6, 5), (2, 5))]
    seen = {1: [], 4: []}
    hooks = [model[i].register_forward_pre_hook(lambda m, inp, i=i: seen[i].append(inp[0].detach().double()))
             for i in seen]
    used = adaptation.estimate_population(model, batches)
    for h in hooks:
        h.remove()
    assert used == 12 and not model.training
    bn_in = torch.cat(seen[1])
    mean, _, unbiased = _moments(bn_in)
    torch.testing.assert_close(model[1].running_mean.double(), mean, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(model[1].running_var.double(), unbiased, rtol=1e-6, atol=1e-7)
    sn_in = torch.cat(seen[4])                  # SN: BN-branch statistics over all 12 samples at once
    flat = sn_in.reshape(12, 5, -1)
    mean_in, var_in = flat.mean(-1), flat.var(-1)
    mean_bn = mean_in.mean(0)
    torch.testing.assert_close(model[4].running_mean.double(), mean_bn, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(model[4].running_var.double(), (var_in + mean_in ** 2).mean(0) - mean_bn ** 2,
                               rtol=1e-6, atol=1e-7)
    assert all(m.test_statistics is None for m in adaptation.statistics_layers(model))


def test_declarations_of_every_built_norm():
    expected = {"bn": "all", "syncbn": "all", "sn": "bn_branch", "syncsn": "bn_branch", "gn": "none", "in": "none",
                "ln": "none"}
    for name, statistics in expected.items():
        layer = norms.build_norm(name, **({"groups": 2} if name == "gn" else {}))(8)
        assert layer.batch_statistics == statistics, name
        assert [id(p) for p in layer.affine_parameters()] == [id(layer.weight), id(layer.bias)]
        switch = layer.switch_parameters()
        assert [id(p) for p in switch] == ([id(layer.mean_weight), id(layer.var_weight)] if "sn" in name else [])
    assert norms.build_norm("sn", using_bn=False)(8).batch_statistics == "none"


def test_a_norm_layer_that_declares_nothing_is_refused_in_one_line():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    with pytest.raises(TypeError, match=r"^1 \(BatchNorm2d\) declares nothing for test-time adaptation") as info:
        adaptation.norm_layers(model)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="prior N must be >= 0"):
        with adaptation.use_test_statistics(nn.Sequential(norms.BatchNorm2d(4)), prior=-1):
            pass
