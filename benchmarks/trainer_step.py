"""The trainer's step against a plain step, alternated step by step in one process on the same batches.

What the trainer does per step between print steps (Trainer.advance: the learning rate, train_step with its
guard, flags and metrics, the counters, the previous step's flags settled) against the plain loop's step
(benchmarks/plain_loop.py's make_step: forward, cross-entropy, zero_grad, backward, SGD), each on its own
model of the same architecture. Alternating
single steps cancels the drift of a shared machine, which moves whole runs by more than the difference
measured here; the end-to-end comparison under torchrun is benchmarks/trainer.py.
"""
import dataclasses
import os
import signal
import statistics
import tempfile
import time

import torch
import yaml

from engine.stop import SIGNALS

from . import plain_loop
from .trainer import CLASSES, png_folder, trainer_config


def summarize_steps(trainer_s, plain_s, warmup):
    """Medians of the step times after the first `warmup` pairs, their ratio and the median of the pairs' ratios."""
    t, p = trainer_s[warmup:], plain_s[warmup:]
    if not t or len(t) != len(p):
        raise ValueError(f"need as many trainer as plain steps past the first {warmup}, got {len(t)} and {len(p)}")
    trainer_ms, plain_ms = 1000 * statistics.median(t), 1000 * statistics.median(p)
    return {"trainer_ms": trainer_ms, "plain_ms": plain_ms, "ratio_of_medians": trainer_ms / plain_ms,
            "median_of_ratios": statistics.median(a / b for a, b in zip(t, p)), "timed_pairs": len(t)}


def _build_trainer(s, data_root, run_dir):
    """The trainer of the end-to-end run's config, in this process (one rank), with this process's signal handlers."""
    from configs import load_config
    from engine.distributed import init_distributed
    from engine.trainer import Trainer
    config = trainer_config(s, data_root, run_dir)
    config["batch"]["gpus"] = 1  # one process: the same per-process batch, the same scaled lr (world * batch)
    config["optim"]["lr"] = s.lr * 256 / s.batch
    config["data"]["workers"] = 0  # the batches are loaded before the timing
    config["log"]["tensorboard"] = False  # the step never writes to TensorBoard
    path = os.path.join(run_dir, "config.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    handlers = {sig: signal.getsignal(sig) for sig in SIGNALS}
    try:
        return Trainer(load_config(path), init_distributed(), os.path.join(run_dir, "run"))
    finally:
        for sig, handler in handlers.items():  # Ctrl-C still stops the benchmark
            signal.signal(sig, handler)


def run_trainer_step(s, cache_dir, batches=16, progress=print):
    """s.steps alternating (trainer, plain) step pairs (the order flips every pair) in s.threads threads; the
    first s.warmup pairs are not timed. On CUDA each step ends with a device synchronization."""
    device = torch.device("cuda", torch.cuda.current_device()) if s.device == "cuda" else torch.device("cpu")
    data_root = png_folder(cache_dir, s.images, s.size, progress=progress) if s.data == "folder" else None
    threads = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        with tempfile.TemporaryDirectory(prefix="sn-trainer-step-") as work:
            trainer = _build_trainer(s, data_root, work)
            try:
                trainer.train_loader.sampler.set_epoch(0)
                loaded = iter(trainer.train_loader)
                data = [next(loaded) for _ in range(min(batches, trainer.steps_per_epoch))]
                trainer.model.train()
                model, optimizer = plain_loop.build(s.depth, s.width, False, CLASSES, s.norm, s.lr, device)
                plain_step = plain_loop.make_step(model, optimizer, device, s.precision)
                steps = {"trainer": trainer.advance, "plain": lambda images, targets, bad: plain_step(images, targets)}
                times = {"trainer": [], "plain": []}
                progress(f"trainer-step: {s.steps} alternating steps of each, {len(data)} batches of {s.batch}")
                for i in range(s.steps):
                    for name in ("trainer", "plain") if i % 2 == 0 else ("plain", "trainer"):
                        start = time.perf_counter()
                        steps[name](*data[i % len(data)])
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        times[name].append(time.perf_counter() - start)
            finally:
                trainer.close()
    finally:
        torch.set_num_threads(threads)
    return {"setup": dataclasses.asdict(s), "data_root": data_root, "batches": len(data),
            **summarize_steps(times["trainer"], times["plain"], s.warmup),
            "trainer_s": times["trainer"], "plain_s": times["plain"]}
