"""Tent, the adaptation methods and the test stream against hand-computed references."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import norms
from configs import AdaptConfig
from engine.adapt import Adapter, entropy, tent_lr
from engine.robustness import share
from engine.stream import StreamBatches, stream_order
from tests.norms import reference

CPU = torch.device("cpu")


class Net(nn.Module):
    """conv -> BN -> ReLU -> conv -> SN -> ReLU -> pool -> fc: one layer with each kind of batch statistics."""

    def __init__(self, second="sn"):
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(3, 4, 3, padding=1), norms.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 1)
        self.norm2 = norms.SwitchNorm2d(6) if second == "sn" else norms.GroupNorm2d(2, 6)
        self.fc = nn.Linear(6, 5)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if "norm" in name or "bn" in name else 0.7)
                        + (1.0 if name.endswith("weight") and p.dim() == 1 else 0.0))
            for b in self.buffers():
                if b.dtype.is_floating_point:
                    b.copy_(torch.rand(b.shape, generator=g) + 0.5)

    def forward(self, x):
        x = F.relu(self.norm2(self.conv2(F.relu(self.bn(self.conv1(x))))))
        return self.fc(x.mean((2, 3)))


def reference_logits(net, x, params):
    """Float64 forward with prediction-time statistics written from the definitions; `params` by name."""
    p = {k: v for k, v in params.items()}
    h = F.conv2d(x.double(), p["conv1.weight"], p["conv1.bias"], padding=1)
    mean = h.mean((0, 2, 3), keepdim=True)
    var = ((h - mean) ** 2).mean((0, 2, 3), keepdim=True)
    h = (h - mean) / (var + 1e-5).sqrt() * p["bn.weight"].view(1, -1, 1, 1) + p["bn.bias"].view(1, -1, 1, 1)
    h = F.conv2d(F.relu(h), p["conv2.weight"], p["conv2.bias"])
    if isinstance(net.norm2, norms.SwitchNorm2d):
        h, _, _ = reference.switch_norm(h, p["norm2.weight"], p["norm2.bias"], p["norm2.mean_weight"],
                                        p["norm2.var_weight"], training=True)
    else:
        h = F.group_norm(h, 2, p["norm2.weight"], p["norm2.bias"], 1e-5)
    return F.linear(F.relu(h).mean((2, 3)), p["fc.weight"], p["fc.bias"])


def _state(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("second, switch", [("sn", False), ("sn", True), ("gn", False)])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_one_tent_step_is_sgd_on_the_entropy_of_the_affine_parameters(second, switch, batch):
    net = Net(second)
    before = _state(net)
    x = torch.randn(batch, 3, 5, 5, generator=torch.Generator().manual_seed(batch)) * 2
    lr = 0.5  # large enough for float32 to see the step; the default rate is checked below
    cfg = AdaptConfig(method="tent", batch=batch, tent_switch=switch, tent_mode="continual", tent_lr=lr)
    adapted = {"bn.weight", "bn.bias", "norm2.weight", "norm2.bias"}
    if switch:
        adapted |= {"norm2.mean_weight", "norm2.var_weight"}
    leaves = {k: v.double().requires_grad_(k in adapted) for k, v in before.items()}
    expected_logits = reference_logits(net, x, leaves)
    loss = -(expected_logits.softmax(1) * expected_logits.log_softmax(1)).sum(1).mean()
    grads = dict(zip(sorted(adapted), torch.autograd.grad(loss, [leaves[k] for k in sorted(adapted)])))
    adapter = Adapter(net, cfg, CPU)
    logits = adapter.predict(x)
    torch.testing.assert_close(logits.double(), expected_logits.detach(), rtol=1e-4, atol=1e-4)
    after = _state(net)
    assert tent_lr(AdaptConfig(method="tent", batch=batch)) == pytest.approx(0.00025 * batch / 64)
    for key, value in after.items():
        if key in adapted:  # first SGD step with momentum: the buffer starts as the gradient
            step = lr * grads[key]
            torch.testing.assert_close(value.double(), before[key].double() - step, rtol=1e-5,
                                       atol=1e-6 + 1e-3 * step.abs().max().item())
            assert not torch.equal(value, before[key])
        else:
            assert torch.equal(value, before[key]), key
    adapter.close()
    assert all(torch.equal(v, before[k]) for k, v in _state(net).items())
    assert all(p.requires_grad for p in net.parameters()) and all(p.grad is None for p in net.parameters())


def test_episodic_tent_starts_every_batch_from_the_source_state_bitwise():
    net = Net()
    before = _state(net)
    batches = [torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    episodic = Adapter(net, AdaptConfig(method="tent", batch=4, tent_mode="episodic"), CPU)
    stream = [episodic.predict(b) for b in batches]
    episodic.close()
    assert all(torch.equal(v, before[k]) for k, v in _state(net).items())
    for b, logits in zip(batches, stream):
        fresh = Adapter(copy.deepcopy(net), AdaptConfig(method="tent", batch=4, tent_mode="episodic"), CPU)
        assert torch.equal(fresh.predict(b), logits)
    continual = Adapter(net, AdaptConfig(method="tent", batch=4, tent_mode="continual"), CPU)
    carried = [continual.predict(b) for b in batches]
    assert torch.equal(carried[0], stream[0]) and not torch.equal(carried[2], stream[2])
    continual.close()
    domain = Adapter(net, AdaptConfig(method="tent", batch=4, tent_mode="domain"), CPU)
    domain.predict(batches[0])
    domain.start_domain()
    assert torch.equal(domain.predict(batches[2]), stream[2])
    domain.close()


@pytest.mark.parametrize("method", ["batch", "prior", "adabn", "tent"])
def test_statistics_methods_leave_a_model_without_batch_statistics_unchanged(method):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), norms.GroupNorm2d(2, 4), nn.ReLU(), nn.Conv2d(4, 4, 1),
                        norms.SwitchNorm2d(4, using_bn=False), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(6, 3, 5, 5)
    net(x)
    before, source = _state(net), net.eval()(x)
    adapter = Adapter(net, AdaptConfig(method=method), CPU)
    adapter.start_domain([x[:2], x[2:]])
    logits = adapter.predict(x)
    if method != "tent":
        assert torch.equal(logits, source) and adapter.layers == 0
    adapter.close()
    assert all(torch.equal(v, before[k]) for k, v in _state(net).items())


def test_adabn_predicts_with_the_domain_s_statistics_and_restores_the_source_ones():
    net = Net()
    before = _state(net)
    data = torch.randn(10, 3, 5, 5) * 3 + 2
    adapter = Adapter(net, AdaptConfig(method="adabn"), CPU)
    adapter.start_domain([data[:4], data[4:]])
    adapted = adapter.predict(data[:3])
    assert not torch.equal(net.bn.running_mean, before["bn.running_mean"])
    adapter.start_domain([data[4:]])              # the next domain starts from the source statistics again
    alone = Net()
    with torch.no_grad():
        norms.adaptation.estimate_population(alone, [data[4:]])
    assert torch.equal(net.bn.running_mean, alone.bn.running_mean)
    adapter.close()
    assert all(torch.equal(v, before[k]) for k, v in _state(net).items())
    assert adapted.shape == (3, 5)


def test_entropy_matches_its_definition():
    logits = torch.randn(7, 4, dtype=torch.float64)
    p = logits.softmax(1)
    torch.testing.assert_close(entropy(logits), -(p * p.log()).sum(1))


@pytest.mark.parametrize("length, batch, world", [(0, 4, 1), (1, 1, 2), (10, 3, 1), (10, 3, 2), (23, 4, 3),
                                                  (5, 256, 4), (64, 16, 5)])
def test_stream_batches_cover_every_position_once_for_any_world(length, batch, world):
    order = stream_order(length, 7, "fog/3")
    assert sorted(order.tolist()) == list(range(length))
    assert torch.equal(order, stream_order(length, 7, "fog/3"))
    assert length < 2 or not torch.equal(order, stream_order(length, 8, "fog/3"))
    seen = {}
    for rank in range(world):
        sampler = StreamBatches(order, batch, rank, world)
        flat = [i for b in sampler for i in b]
        assert all(len(b) <= batch for b in sampler)
        for position, index in zip(sampler.positions(), flat):
            assert order[position] == index and position not in seen
            seen[position] = rank
    assert sorted(seen) == list(range(length))
    assert all(seen[p] == (p // batch) % world for p in seen)
    whole = StreamBatches(order, batch, 0, world, share="all")
    assert [i for b in whole for i in b] == order.tolist()
    assert len(StreamBatches(order, batch, 0, world, share="none")) == 0


def test_each_method_s_stream_split_over_ranks():
    env = lambda rank, world: type("Env", (), {"rank": rank, "world": world})  # noqa: E731
    for method in ("source", "batch", "prior", "adabn"):
        assert share(AdaptConfig(method=method), 3, env(1, 2)) == "batch"
    assert share(AdaptConfig(method="tent", tent_mode="episodic"), 3, env(0, 2)) == "batch"
    domain = AdaptConfig(method="tent", tent_mode="domain")
    assert [share(domain, d, env(1, 3)) for d in range(4)] == ["none", "all", "none", "none"]
    assert share(AdaptConfig(method="tent", tent_mode="continual"), 5, env(0, 1)) == "all"
    with pytest.raises(ValueError, match="tent in mode continual adapts along one stream .* runs on one process"):
        share(AdaptConfig(method="tent", tent_mode="continual"), 0, env(0, 2))
