"""On CUDA, a training step between print steps makes no host synchronization (counted by torch's sync debug mode)."""
import warnings

import pytest
import torch

from tests.engine.tiny import make_image_folder, write_config


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: counts host synchronizations of CUDA steps")
def test_steps_between_print_steps_do_not_synchronize(tmp_path, in_process_trainer):
    from configs import load_config
    data = make_image_folder(str(tmp_path / "data"), train_per_class=24)
    cfg = load_config(write_config(str(tmp_path), data, norm="bn", epochs=1),
                      ["log.print_every=1000", "log.tensorboard=false"])
    trainer = in_process_trainer(cfg, tmp_path / "runs" / "run")
    step, counted = trainer.train_step, []

    def counting_step(*args):
        # steps 3 .. last-1: after warm-up (first allocations) and before the epoch's last step, which reads at once
        on = 3 <= trainer.step_in_epoch < trainer.steps_per_epoch - 1
        torch.cuda.set_sync_debug_mode("warn" if on else "default")
        return step(*args)
    trainer.train_step = counting_step
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trainer.train_epoch()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    counted = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
    assert trainer.steps_per_epoch >= 8
    assert counted == [], counted[:3]
