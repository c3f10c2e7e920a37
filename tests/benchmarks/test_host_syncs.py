"""benchmarks/host_syncs.py's counting, on a stand-in trainer whose steps warn a known number of times."""
import warnings

from benchmarks.host_syncs import count_syncs, summary

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
