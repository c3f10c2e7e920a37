"""Weight-decay groups: norm parameters (SN logits included) and biases exempted only when asked."""
import pytest
import torch.nn as nn

import norms
from engine.optim import param_groups


def model():
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=True), norms.build_norm("sn")(8), nn.Flatten(), nn.Linear(8, 2))


@pytest.mark.parametrize("decay_norm,decay_bias", [(True, True), (False, True), (True, False), (False, False)])
def test_groups(decay_norm, decay_bias):
    m = model()
    groups = param_groups(m, 1e-4, decay_norm, decay_bias)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    sn = m[1]
    for p in (sn.weight, sn.bias, sn.mean_weight, sn.var_weight):
        assert (id(p) in decayed) == decay_norm
    for p in (m[0].bias, m[3].bias):
        assert (id(p) in decayed) == decay_bias
    assert id(m[0].weight) in decayed and id(m[3].weight) in decayed
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))
