"""Clocks and the interleaved timing loop every section uses: warm-up, round-robin repeats, medians."""
import math
import statistics
import time

import torch


class CpuClock:
    """Wall-clock timer for work that runs synchronously on the CPU."""

    def start(self):
        return time.perf_counter()

    def stop(self, token):
        return time.perf_counter() - token


class CudaClock:
    """CUDA-event timer on the current stream; the queue is drained first so earlier work is not counted."""

    def __init__(self, device):
        self.device = torch.device(device)

    def start(self):
        torch.cuda.synchronize(self.device)
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def stop(self, token):
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        return token.elapsed_time(end) / 1e3


def clock_for(device):
    """The clock that measures work queued on `device`."""
    return CudaClock(device) if torch.device(device).type == "cuda" else CpuClock()


def time_block(fn, clock, inner):
    """Seconds per call of fn, timed over `inner` back-to-back calls."""
    token = clock.start()
    for _ in range(inner):
        fn()
    return clock.stop(token) / inner


def interleaved(fns, clock, repeats, warmup=1, min_sample_s=0.0, max_inner=1000):
    """Time every callable of `fns` (name -> fn) `repeats` times, round-robin, after `warmup` calls each.

    Repeat r visits the variants in the order rotated by r, so that no variant always follows the same
    one (caches, clocks and allocator state left behind by the previous variant are spread evenly).
    Each sample times `inner` consecutive calls, chosen per variant from the last warm-up call so that a
    sample lasts at least min_sample_s (short GPU kernels would otherwise measure launch jitter).
    A variant that raises during warm-up is dropped and its error reported instead of its times; one that
    raises later (no warm-up, or a failure that comes and goes) stops the run, as any other bug.
    Returns {name: {"median_s", "samples_s", "inner"} or {"error": message}}.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 1 and min_sample_s > 0:
        raise ValueError("choosing the calls per sample needs a warm-up call: warmup must be >= 1")
    results, inner = {}, {}
    for name, fn in fns.items():
        try:
            last = None
            for _ in range(warmup):
                last = time_block(fn, clock, 1)
        except Exception as error:  # a variant under development must not take the others down
            results[name] = {"error": f"{type(error).__name__}: {error}".splitlines()[0]}
            continue
        inner[name] = 1 if min_sample_s <= 0 else max(1, min(max_inner, math.ceil(min_sample_s / max(last, 1e-9))))
    names = list(inner)
    samples = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            samples[name].append(time_block(fns[name], clock, inner[name]))
    for name in names:
        results[name] = {"median_s": statistics.median(samples[name]), "samples_s": samples[name],
                         "inner": inner[name]}
    return {name: results[name] for name in fns}


def copy_rate(device, nbytes, clock, repeats, warmup=1):
    """Device-to-device copy rate in bytes/s (bytes read + bytes written), from a copy of an nbytes tensor."""
    numel = max(1, nbytes // 4)
    src = torch.empty(numel, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    timed = interleaved({"copy": lambda: dst.copy_(src)}, clock, repeats, warmup)["copy"]
    moved = 2 * numel * src.element_size()
    return {"bytes": numel * src.element_size(), "median_s": timed["median_s"], "samples_s": timed["samples_s"],
            "bytes_per_s": moved / timed["median_s"]}
