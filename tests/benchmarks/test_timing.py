"""The interleaved timing loop on a fake clock: call order, medians, calls per sample, failing variants."""
import pytest

from benchmarks.timing import copy_rate, interleaved


class FakeClock:
    """Time advances only when a fake workload says so."""

    def __init__(self):
        self.now = 0.0

    def start(self):
        return self.now

    def stop(self, token):
        return self.now - token


def workload(clock, log, name, durations):
    """A callable that logs its name and advances the clock by the next of `durations`."""
    it = iter(durations)

    def fn():
        log.append(name)
        clock.now += next(it)
    return fn


def test_round_robin_order_and_medians():
    clock, log = FakeClock(), []
    fns = {"a": workload(clock, log, "a", [9.0, 0.5, 0.1, 0.3]),
           "b": workload(clock, log, "b", [9.0, 2.0, 4.0, 3.0]),
           "c": workload(clock, log, "c", [9.0, 7.0, 5.0, 6.0])}
    out = interleaved(fns, clock, repeats=3, warmup=1)
    # One warm-up call each, then repeats visiting a,b,c / b,c,a / c,a,b.
    assert log == ["a", "b", "c"] + ["a", "b", "c"] + ["b", "c", "a"] + ["c", "a", "b"]
    assert out["a"]["samples_s"] == pytest.approx([0.5, 0.1, 0.3]) and out["a"]["median_s"] == pytest.approx(0.3)
    assert out["b"]["samples_s"] == pytest.approx([2.0, 4.0, 3.0]) and out["b"]["median_s"] == pytest.approx(3.0)
    assert out["c"]["median_s"] == pytest.approx(6.0)
    assert all(out[k]["inner"] == 1 for k in "abc")


def test_even_number_of_repeats_averages_the_middle_two():
    clock, log = FakeClock(), []
    out = interleaved({"a": workload(clock, log, "a", [1.0, 4.0, 1.0, 2.0, 8.0])}, clock, repeats=4, warmup=1)
    assert out["a"]["median_s"] == pytest.approx((2.0 + 4.0) / 2)


def test_short_calls_are_batched_to_the_minimum_sample_time():
    clock, log = FakeClock(), []
    out = interleaved({"fast": workload(clock, log, "fast", [0.001] * 100)}, clock, repeats=2, warmup=2,
                      min_sample_s=0.01)
    assert out["fast"]["inner"] == 10
    assert len(log) == 2 + 2 * 10
    assert out["fast"]["median_s"] == pytest.approx(0.001)


def test_a_failing_variant_is_reported_and_the_others_still_timed():
    clock, log = FakeClock(), []

    def broken():
        raise RuntimeError("kernel not supported\nsecond line")
    out = interleaved({"ok": workload(clock, log, "ok", [1.0, 2.0]), "broken": broken}, clock, repeats=1)
    assert out["broken"] == {"error": "RuntimeError: kernel not supported"}
    assert out["ok"]["median_s"] == 2.0 and list(out) == ["ok", "broken"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="repeats"):
        interleaved({}, FakeClock(), repeats=0)
    with pytest.raises(ValueError, match="warm-up"):
        interleaved({}, FakeClock(), repeats=1, warmup=0, min_sample_s=0.1)


def test_copy_rate_counts_bytes_read_and_written():
    class HalfSecond:
        def start(self):
            return None

        def stop(self, token):
            return 0.5
    out = copy_rate("cpu", 4096, HalfSecond(), repeats=2)
    assert out["bytes"] == 4096 and out["median_s"] == 0.5
    assert out["bytes_per_s"] == 2 * 4096 / 0.5
