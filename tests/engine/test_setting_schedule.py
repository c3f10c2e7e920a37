"""The (g, b) setting resolution and the learning-rate schedules, against values written out by hand."""
import math

import pytest

from configs import BatchConfig, ScheduleConfig
from engine.schedule import lr_at
from engine.setting import resolve_setting


@pytest.mark.parametrize("g,b,w,per_process,groups", [(8, 32, 8, 32, 1), (8, 2, 2, 8, 4), (8, 4, 1, 32, 8),
                                                       (1, 16, 1, 16, 1), (8, 1, 4, 2, 2)])
def test_setting(g, b, w, per_process, groups):
    s = resolve_setting(BatchConfig(gpus=g, samples_per_gpu=b), 0.1, w)
    assert (s.per_process, s.stat_groups, s.total) == (per_process, groups, g * b)
    assert s.lr == pytest.approx(0.1 * g * b / 256)
    assert f"({g}, {b})" in s.describe()


def test_setting_world_not_dividing_gpus_is_an_error():
    with pytest.raises(ValueError, match=r"needs 8 GPUs or a divisor of 8 processes, got 3"):
        resolve_setting(BatchConfig(gpus=8, samples_per_gpu=4), 0.1, 3)


def test_step_schedule():
    cfg = ScheduleConfig(type="step", milestones=[30, 60, 90], gamma=0.1)
    assert [lr_at(e, 0.4, cfg, 100) for e in (0, 29.99, 30, 59.5, 60, 90, 99.9)] == pytest.approx(
        [0.4, 0.4, 0.04, 0.04, 0.004, 0.0004, 0.0004])


def test_warmup_then_cosine():
    cfg = ScheduleConfig(type="cosine", warmup_epochs=5, warmup_factor=0.1, min_lr=0.0)
    assert lr_at(0, 1.0, cfg, 120) == pytest.approx(0.1)
    assert lr_at(2.5, 1.0, cfg, 120) == pytest.approx(0.55)
    assert lr_at(5, 1.0, cfg, 120) == pytest.approx(1.0)
    assert lr_at(5 + 57.5, 1.0, cfg, 120) == pytest.approx(0.5)
    assert lr_at(120, 1.0, cfg, 120) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(30, 1.0, cfg, 120) == pytest.approx(0.5 * (1 + math.cos(math.pi * 25 / 115)))


@pytest.mark.parametrize("norm", ["bn", "syncbn", "gn", "sn", "syncsn", "in", "ln"])
def test_the_norm_of_an_emulated_setting_splits_the_batch_where_the_type_normalizes_over_it(norm):
    """Every norm type builds under an emulated setting (8 GPUs on 2 processes); bn and sn (per-GPU batch
    statistics) split each process batch into the 4 emulated GPUs, the others have nothing to split."""
    import torch

    from configs import load_config
    from engine.setting import effective_setting, norm_factory
    options = ["norm.groups=2"] if norm == "gn" else []
    cfg, setting, _ = effective_setting(load_config(None, [f"norm.type={norm}", "batch.gpus=8", *options]), 2)
    layer = norm_factory(cfg, setting)(4)
    assert setting.stat_groups == 4
    split = getattr(layer, "stat_groups", 1)
    assert split == 4 if norm in ("bn", "sn") else split == 1
    if not norm.startswith("sync"):  # the synchronized ones need a process group to run
        assert layer(torch.randn(8, 4, 3, 3)).shape == (8, 4, 3, 3)
