"""The finiteness guard without a gradient pass: a non-finite gradient under a finite loss still stops the run
(one step later, through the next loss) or, when clipping computes the norm, at once; no checkpoint ever
holds the non-finite weights."""
import math
import os

import pytest
import torch

from tests.engine.tiny import write_config


def _poison_first_gradient(trainer):
    """From the first step on, one parameter's gradient is NaN while that step's loss stays finite."""
    param = next(trainer.model.parameters())
    param.register_hook(lambda grad: grad * math.nan if trainer.global_step == 0 else grad)


def _checkpoints(run_dir):
    return [os.path.join(run_dir, n) for n in os.listdir(run_dir) if n.endswith(".pt")]


@pytest.mark.parametrize("clip,every_iters,message", [
    (None, 0, "non-finite loss at iteration 2"),           # step 1's update is NaN: step 2's loss is
    (1.0, 0, "non-finite gradient norm at iteration 1"),   # clipping's norm sees it at once
    (None, 1, "refusing to checkpoint non-finite weights"),  # step 1's checkpoint: save() refuses it
], ids=["loss_next_step", "clip_norm", "checkpoint_refused"])
def test_nan_gradient_with_finite_loss_stops_before_any_checkpoint_holds_it(tmp_path, dataset, in_process_trainer,
                                                                            clip, every_iters, message):
    from configs import load_config
    overrides = ["log.print_every=100", "log.tensorboard=false", f"checkpoint.every_iters={every_iters}"]
    overrides += [f"optim.clip_grad_norm={clip}"] if clip else []
    cfg = load_config(write_config(str(tmp_path), dataset, norm="bn", epochs=1), overrides)
    run_dir = tmp_path / "runs" / "run"
    trainer = in_process_trainer(cfg, run_dir)
    assert trainer.steps_per_epoch >= 4  # the guard fires inside the epoch, not at its end
    _poison_first_gradient(trainer)
    with pytest.raises(FloatingPointError, match=message):
        trainer.fit()
    assert trainer.global_step <= 3  # read one step late at most
    for path in _checkpoints(run_dir):
        state = torch.load(path, weights_only=True)
        assert all(t.isfinite().all() for t in state["model"].values() if t.is_floating_point()), path
