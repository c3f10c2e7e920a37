"""--what trainer-step: the arithmetic of the alternated step times, and one quick run through scripts/benchmark.py."""
import signal
import statistics

import pytest

from benchmarks.trainer_step import summarize_steps
from tests.benchmarks.quick import run_quick


def test_summarize_steps_drops_the_warmup_pairs_and_takes_medians_and_pair_ratios():
    trainer = [9.0, 9.0, 0.110, 0.090, 0.120]   # seconds; the first two pairs are warm-up
    plain = [1.0, 1.0, 0.100, 0.100, 0.100]
    out = summarize_steps(trainer, plain, warmup=2)
    assert out["timed_pairs"] == 3
    assert out["trainer_ms"] == pytest.approx(110.0) and out["plain_ms"] == pytest.approx(100.0)
    assert out["ratio_of_medians"] == pytest.approx(1.1)
    assert out["median_of_ratios"] == pytest.approx(1.1)   # pair ratios 1.1, 0.9, 1.2


def test_median_of_pair_ratios_differs_from_ratio_of_medians_when_pairs_drift():
    # a slow second half (the machine drifting): pairs keep their ratio, the medians mix the halves
    trainer = [0.101, 0.101, 0.202, 0.202, 0.202]
    plain = [0.100, 0.100, 0.200, 0.200, 0.100]
    out = summarize_steps(trainer, plain, warmup=0)
    assert out["median_of_ratios"] == pytest.approx(1.01)
    assert out["ratio_of_medians"] == pytest.approx(0.202 / 0.100)


@pytest.mark.parametrize("trainer,plain", [([1.0, 1.0], [1.0]), ([1.0], [1.0])], ids=["unequal", "all_warmup"])
def test_summarize_steps_refuses_what_it_cannot_pair(trainer, plain):
    with pytest.raises(ValueError, match="need as many trainer as plain steps"):
        summarize_steps(trainer, plain, warmup=1)


def test_quick_run_alternates_both_steps_and_restores_the_signal_handlers(tmp_path):
    proc, data = run_quick(tmp_path, "trainer-step")
    assert "trainer_step" in data and "trainer" not in data and "layers" not in data
    section = data["trainer_step"]
    s = section["setup"]
    assert (s["steps"], s["warmup"], s["batch"]) == (6, 2, 4)
    assert len(section["trainer_s"]) == len(section["plain_s"]) == 6 and section["timed_pairs"] == 4
    assert section["trainer_ms"] == pytest.approx(1000 * statistics.median(section["trainer_s"][2:]))
    assert section["plain_ms"] == pytest.approx(1000 * statistics.median(section["plain_s"][2:]))
    assert all(t > 0 for t in section["trainer_s"] + section["plain_s"])
    assert "Trainer step vs plain step" in proc.stdout


def test_building_the_trainer_keeps_the_callers_signal_handlers(tmp_path):
    """The trainer installs its stop handlers; the benchmark puts the caller's back, so Ctrl-C still stops it."""
    from benchmarks.trainer import Setup
    from benchmarks.trainer_step import _build_trainer
    from tests.engine.tiny import make_image_folder
    data = make_image_folder(str(tmp_path / "data"), train_per_class=8)
    s = Setup(device="cpu", world=1, batch=4, steps=4, warmup=1, data="folder", images=16, size=12, depth=18,
              width=8, precision="fp32", workers=0, threads=1)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    trainer = _build_trainer(s, data, str(tmp_path))
    try:
        assert {sig: signal.getsignal(sig) for sig in before} == before
        images, targets, bad = next(iter(trainer.train_loader))
        assert trainer.advance(images, targets, bad) == pytest.approx(s.lr)  # the plain loop's learning rate
        assert trainer.global_step == 1 and trainer._in_flight is not None
    finally:
        trainer.close()
