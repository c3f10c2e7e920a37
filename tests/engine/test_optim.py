"""Weight-decay groups (norm parameters, SN logits included, and biases exempted only when asked) and the
trainer's optimizer step with and without gradient clipping."""
import pytest
import torch
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


@pytest.mark.parametrize("clip", [None, 1e-3], ids=["no_clipping", "clipped"])
def test_trainer_step_equals_a_reference_step_with_torch_clip_grad_norm(tmp_path, dataset, in_process_trainer, clip):
    """The trainer's step (one norm pass shared by the guard and the clipping) against autograd + clip_grad_norm_."""
    import copy

    import torch.nn.functional as F

    from configs import load_config
    from engine.optim import build_optimizer
    from tests.engine.tiny import write_config
    overrides = ["model.dropout=0", "log.tensorboard=false"] + ([f"optim.clip_grad_norm={clip}"] if clip else [])
    cfg = load_config(write_config(str(tmp_path), dataset, norm="bn"), overrides)
    trainer = in_process_trainer(cfg, tmp_path / "runs" / "run")
    trainer._meter = {"loss": 0.0, "correct": 0, "correct5": 0, "seen": 0, "steps": 0}
    reference = copy.deepcopy(trainer.model)
    optimizer = build_optimizer(reference, trainer.cfg.optim, trainer.setting.lr)
    images, targets, bad = next(iter(trainer.train_loader))
    for group in trainer.optimizer.param_groups + optimizer.param_groups:
        group["lr"] = 0.05
    trainer._settle(trainer.train_step(images, targets, bad))
    loss = F.cross_entropy(reference(images), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), clip or float("inf"))
    assert clip is None or norm > 10 * clip  # the clipping really scales
    optimizer.step()
    for (name, ours), theirs in zip(trainer.model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7, msg=name)
    assert trainer._meter["steps"] == 1 and trainer._meter["loss"] == pytest.approx(loss.item(), rel=1e-6)
