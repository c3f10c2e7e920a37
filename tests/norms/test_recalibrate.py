"""recalibrate gives the exact count-weighted population average of per-batch statistics."""
import pytest
import torch
import torch.nn as nn

import norms


def batch_stats(x, kind, groups):
    """Per-group (mean, var) in float64 from the definitions, as the layer's EMA would take them."""
    out = []
    for chunk in x.double().chunk(groups):
        if kind == "bn":
            out.append((chunk.mean(dim=(0, 2, 3)), chunk.var(dim=(0, 2, 3), correction=1)))
        else:
            mean_in = chunk.mean(dim=(2, 3))
            var_in = chunk.var(dim=(2, 3), correction=1)
            mean_bn = mean_in.mean(0)
            out.append((mean_bn, (var_in + mean_in ** 2).mean(0) - mean_bn ** 2))
    return out


@pytest.mark.parametrize("sn_mode", [True, False])
def test_population_statistics_exact(sn_mode):
    torch.manual_seed(0)
    bn = norms.build_norm("bn", stat_groups=2)(6)
    sn = norms.build_norm("sn", using_moving_average=sn_mode, stat_groups=1)(6)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), bn, nn.ReLU(), nn.Conv2d(6, 6, 3), sn).double()
    batches = [torch.randn(4, 3, 8, 8, dtype=torch.float64) * (i + 1) + i for i in range(5)]
    captured = {bn: [], sn: []}
    hooks = [m.register_forward_hook(lambda m, inp, out: captured[m].append(inp[0].detach())) for m in captured]
    model.train()
    with torch.no_grad():
        for b in batches[:4]:
            model(b)
    for h in hooks:
        h.remove()
    model.eval()
    used = norms.recalibrate(model, iter((b, torch.zeros(4)) for b in batches), num_batches=4)
    assert used == 4 and not model.training
    for layer, kind, groups in ((bn, "bn", 2), (sn, "sn", 1)):
        stats = [s for x in captured[layer] for s in batch_stats(x, kind, groups)]
        torch.testing.assert_close(layer.running_mean, torch.stack([m for m, _ in stats]).mean(0),
                                   rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(layer.running_var, torch.stack([v for _, v in stats]).mean(0),
                                   rtol=1e-10, atol=1e-10)
    assert layer._population is None


def test_weights_by_batch_size():
    bn = norms.build_norm("bn")(2).double()
    big, small = torch.randn(6, 2, 3, 3, dtype=torch.float64), torch.randn(2, 2, 3, 3, dtype=torch.float64) + 5
    norms.recalibrate(nn.Sequential(bn), [big, small], 2)
    expected = (6 * big.mean(dim=(0, 2, 3)) + 2 * small.mean(dim=(0, 2, 3))) / 8
    torch.testing.assert_close(bn.running_mean, expected, rtol=1e-12, atol=1e-12)


def test_errors_and_foreign_layers():
    model = nn.Sequential(norms.build_norm("bn")(2))
    with pytest.raises(ValueError, match="no batches"):
        norms.recalibrate(model, [], 3)
    with pytest.raises(TypeError, match="norms.build_norm"):
        norms.recalibrate(nn.Sequential(nn.BatchNorm2d(2)), [torch.randn(2, 2, 2, 2)], 1)
