"""GroupNorm2d (gn, in, ln): the fused path against torch's own group_norm, and nn.GroupNorm compatibility."""
import pytest
import torch
import torch.nn.functional as F

import norms
from norms import GroupNorm2d


@pytest.fixture(autouse=True)
def torch_op_primitives(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def run(fn, x, dy, params):
    x = x.detach().clone().requires_grad_()
    for p in params:
        p.grad = None
    y = fn(x)
    (y * dy).sum().backward()
    return [y.detach(), x.grad, *[p.grad.clone() for p in params]]


@pytest.mark.parametrize("name,groups", [("gn", 2), ("gn", 3), ("in", None), ("ln", None)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_matches_torch_group_norm_float64(name, groups, channels_last):
    c = 6
    options = {"groups": groups} if groups else {}
    layer = norms.build_norm(name, impl="fused", **options)(c).double()
    assert isinstance(layer, GroupNorm2d)
    g = {"gn": groups, "in": c, "ln": 1}[name]
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.randn(3, c, 5, 4, dtype=torch.float64) * 2 + 3).contiguous(memory_format=fmt)
    dy = torch.randn(3, c, 5, 4, dtype=torch.float64)
    params = [layer.weight, layer.bias]
    got = run(layer, x, dy, params)
    want = run(lambda t: F.group_norm(t, g, layer.weight, layer.bias, layer.eps), x.contiguous(), dy, params)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert got[0].is_contiguous(memory_format=fmt) and got[1].is_contiguous(memory_format=fmt)


def test_no_affine_and_other_ranks_fall_back():
    layer = GroupNorm2d(2, 4, affine=False, impl="fused").double()
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(layer(x), F.group_norm(x, 2), rtol=1e-10, atol=1e-10)
    x3 = torch.randn(2, 4, 7, dtype=torch.float64)  # not 4-D: nn.GroupNorm's own forward
    torch.testing.assert_close(layer(x3), F.group_norm(x3, 2), rtol=1e-12, atol=1e-12)


def test_float32_fused_close_to_native():
    layer = GroupNorm2d(4, 8, impl="fused")
    x = torch.randn(4, 8, 7, 7) * 3 + 2
    dy = torch.randn_like(x)
    got = run(layer, x, dy, [layer.weight, layer.bias])
    want = run(lambda t: F.group_norm(t, 4, layer.weight, layer.bias), x, dy, [layer.weight, layer.bias])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_same_constructor_and_state_dict_as_nn_group_norm():
    ours, theirs = GroupNorm2d(4, 8, eps=1e-3), torch.nn.GroupNorm(4, 8, eps=1e-3)
    assert (ours.num_groups, ours.num_channels, ours.eps, ours.affine) == (4, 8, 1e-3, True)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    with torch.no_grad():
        theirs.weight.normal_()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(ours(x), theirs(x))
    assert GroupNorm2d(2, 4, affine=False).state_dict() == {}


def test_wrong_channel_count_is_a_clear_error():
    with pytest.raises(ValueError, match=r"GroupNorm2d expects 8 channels, got input of shape \(2, 6, 3, 3\)"):
        GroupNorm2d(2, 8, impl="fused")(torch.randn(2, 6, 3, 3))
