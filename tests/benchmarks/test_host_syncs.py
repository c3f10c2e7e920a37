"""benchmarks/host_syncs.py: its counting on a stand-in trainer whose steps warn a known number of times, and
the whole program on the CPU."""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from benchmarks.host_syncs import count_syncs, summary

REPO = Path(__file__).resolve().parents[2]

SYNCS = {0: 5, 1: 4, 2: 0, 3: 2, 4: 0, 5: 1, 6: 7}  # warnings each step (and the code after it) raises


class FakeTrainer:
    steps_per_epoch = 7

    def __init__(self):
        self.step_in_epoch = 0

    def train_step(self):
        for _ in range(SYNCS[self.step_in_epoch]):
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
        warnings.warn("an unrelated warning", stacklevel=1)


def test_counts_belong_to_the_step_they_follow_and_only_counted_steps_are_on():
    modes = []

    def run():
        t = FakeTrainer()
        for i in range(t.steps_per_epoch):
            t.step_in_epoch = i
            t.train_step()

    counts, messages = count_syncs(run, FakeTrainer, lambda t: 2 <= t.step_in_epoch < 6, modes.append)
    assert counts == {2: 0, 3: 2, 4: 0, 5: 1}
    assert messages == ["called a synchronizing CUDA operation"]
    assert modes == ["default", "default", "warn", "warn", "warn", "warn", "default", "default"]
    assert FakeTrainer.train_step.__name__ == "train_step"  # unwrapped again
    assert summary(counts) == {"steps_counted": 4, "total": 3, "per_step_mean": 0.75, "per_step_max": 2}


@pytest.mark.slow
def test_train_py_runs_under_the_counter_on_the_cpu(tmp_path):
    """The whole program on the CPU, where nothing synchronizes: train.py's steps 3..steps-2 are counted."""
    out = tmp_path / "syncs.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.host_syncs", "--device", "cpu", "--batch", "4",
                           "--steps", "7", "--folder-steps", "7", "--workers", "0", "--tensorboard", "false",
                           "--cache-dir", str(tmp_path / "cache"), "--json", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (run,) = json.loads(out.read_text())["runs"]
    assert run["per_step"] == {"3": 0, "4": 0, "5": 0} and run["total"] == 0 and run["steps_counted"] == 3
