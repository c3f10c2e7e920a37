"""This repository's trainer against a plain loop: train.py under torchrun and benchmarks/plain_loop.py (and,
if given, a copy of timm's train.py) on the same model, data, batch, precision and world size.

Each program runs as its own torchrun job, in interleaved rounds (round r starts at program r mod n, so
no program always runs first or after the same one). Steady-state images/s come from wall-clock
timestamps each program leaves at some steps, taken between the first such step >= `warmup` and the
last <= `steps`: train.py's metrics.jsonl rows (written every log.print_every steps), the plain loop's
JSON, and for timm the arrival of its log lines. Nothing in the trainer is instrumented.
"""
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import yaml
from PIL import Image

from .cache import cached_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES, VAL_PER_CLASS = 10, 2
DATA_KINDS = ("folder", "synthetic")
BASELINE = "plain"


@dataclasses.dataclass
class Setup:
    """What every program is run with."""
    device: str          # cpu | cuda (one GPU per process)
    world: int           # processes
    batch: int           # images per process and step
    steps: int           # last timed step (the trainer stops there: train.max_iters)
    warmup: int          # first timed step
    data: str            # folder | synthetic
    images: int          # training images of the generated folder
    size: int            # image size: train crop, val resize and crop, PNG size
    depth: int
    width: int
    precision: str       # fp32 | bf16
    workers: int         # DataLoader workers per process
    threads: int         # OMP_NUM_THREADS per process
    lr: float = 0.1      # for the total batch world*batch, as the plain loop's SGD gets it
    norm: str = "bn"
    tensorboard: bool = True  # the trainer's log.tensorboard (off where tensorboardX is not installed)

    @property
    def every(self):
        """Steps between timestamps: both ends of the window fall on one."""
        return math.gcd(self.warmup, self.steps)

    @property
    def images_per_step(self):
        return self.world * self.batch


# ----- data --------------------------------------------------------------------------------------------
def png_folder(cache_dir, images, size, seed=0, progress=print):
    """ImageFolder root with train/ (`images` PNGs) and val/ (VAL_PER_CLASS per class) of CLASSES classes.

    Each class has its own colour; every image is that colour plus Gaussian noise, so the classes can be
    learnt and the PNGs do not compress to nothing. Deterministic in (images, size, seed).
    """
    def fill(tmp):
        rng = np.random.default_rng(seed)
        colours = rng.integers(40, 216, (CLASSES, 3))
        for split, count in (("train", images), ("val", CLASSES * VAL_PER_CLASS)):
            for c in range(CLASSES):
                os.makedirs(os.path.join(tmp, split, f"class_{c:02d}"))
            for i in range(count):
                c = i % CLASSES
                pixels = colours[c] + rng.normal(0, 40, (size, size, 3))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(
                    os.path.join(tmp, split, f"class_{c:02d}", f"{i:06d}.png"))

    return cached_folder(cache_dir, f"png-{images}-{CLASSES}c-{size}px-s{seed}", fill, progress)


# ----- the programs' command lines ---------------------------------------------------------------------
def torchrun(s):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={s.world}"]


def steps_per_epoch(s):
    """Training steps per epoch of train.py's sampler (the synthetic set's length is data/loaders.py's)."""
    from data.loaders import SYNTHETIC_TRAIN
    length = s.images if s.data == "folder" else max(SYNTHETIC_TRAIN, s.images_per_step)
    return length // s.images_per_step


def trainer_config(s, data_root, out_dir):
    """train.py's config: the plain loop's run. The epochs outlast the window and neither validation nor
    epoch checkpoints fall inside it; train.max_iters stops the run (with a checkpoint) after the last step."""
    epochs = math.ceil(s.steps / steps_per_epoch(s)) + 1
    return {"model": {"arch": "resnet", "depth": s.depth, "variant": "v1", "width": s.width, "small_stem": False,
                      "num_classes": CLASSES},
            "norm": {"type": s.norm},
            "batch": {"gpus": s.world, "samples_per_gpu": s.batch},
            # the trainer scales optim.lr by gpus*samples_per_gpu/256
            "optim": {"lr": s.lr * 256 / s.images_per_step, "momentum": 0.9, "weight_decay": 1e-4},
            "schedule": {"type": "step", "milestones": [epochs]},
            "data": {"root": data_root, "synthetic": s.data == "synthetic", "train_crop": s.size,
                     "val_resize": s.size, "val_crop": s.size, "workers": s.workers},
            "train": {"epochs": epochs, "eval_every": epochs, "max_iters": s.steps, "precision": s.precision},
            "log": {"out_dir": out_dir, "name": "run", "print_every": s.every, "tensorboard": s.tensorboard},
            "checkpoint": {"every_epochs": 0, "resume": "none"}}


def trainer_argv(s, config_path):
    return torchrun(s) + [os.path.join(REPO, "train.py"), "--config", config_path]


def plain_argv(s, data_root, out_path):
    return torchrun(s) + [os.path.join(REPO, "benchmarks", "plain_loop.py"),
                          "--data", "synthetic" if s.data == "synthetic" else data_root, "--out", out_path,
                          "--depth", str(s.depth), "--width", str(s.width), "--num-classes", str(CLASSES),
                          "--norm", s.norm, "--crop", str(s.size), "--batch", str(s.batch), "--lr", str(s.lr),
                          "--workers", str(s.workers), "--precision", s.precision, "--steps", str(s.steps),
                          "--record-every", str(s.every)]


def timm_argv(s, timm_train, data_root, out_dir):
    """timm's train.py with the same run: its resnet{depth} (torchvision's layout), SGD with momentum (timm's
    "sgd" is Nesterov's), constant lr, the plain loop's augmentation; validation only after the last epoch."""
    if s.data != "folder":
        raise ValueError("--timm-train needs --trainer-data folder (timm's train.py reads an ImageFolder)")
    if s.width != 64:
        raise ValueError("--timm-train compares timm's resnet models: it needs --trainer-width 64")
    epochs = math.ceil(s.steps / steps_per_epoch(s))
    argv = torchrun(s) + [timm_train, data_root, "--train-split", "train", "--val-split", "val",
                          "--model", f"resnet{s.depth}", "--num-classes", str(CLASSES),
                          "--input-size", "3", str(s.size), str(s.size), "--crop-pct", "1.0", "-b", str(s.batch),
                          "--opt", "momentum", "--lr", str(s.lr), "--momentum", "0.9", "--weight-decay", "1e-4",
                          "--sched", "constant", "--warmup-epochs", "0", "--epochs", str(epochs),
                          "--val-interval", str(epochs), "--smoothing", "0", "--color-jitter", "0",
                          "--train-interpolation", "bilinear", "--workers", str(s.workers), "--seed", "0",
                          "--log-interval", str(s.every), "--no-ddp-bb", "--checkpoint-hist", "1",
                          "--output", out_dir, "--device", s.device]
    if s.device == "cpu":
        argv.append("--no-prefetcher")  # timm's prefetcher is for accelerators
    else:
        argv.append("--pin-mem")
    if s.precision == "bf16":
        argv += ["--amp", "--amp-dtype", "bfloat16"]
    return argv


def environment(s):
    env = dict(os.environ, OMP_NUM_THREADS=str(s.threads), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    if s.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # every program picks CUDA when it sees a GPU
    return env


# ----- timestamps and arithmetic -----------------------------------------------------------------------
def trainer_times(metrics_path):
    """{step: time.time()} of train.py's "train" rows in metrics.jsonl."""
    times = {}
    with open(metrics_path) as f:
        for line in f:
            row = json.loads(line)
            if row.get("kind") == "train":
                times[int(row["step"])] = float(row["time"])
    return times


TIMM_LINE = re.compile(r"Train: (\d+) \[\s*(\d+)/(\d+)")


def timm_times(lines):
    """{step: arrival time} from (arrival time, text) of timm's output; 'Train: E [ i/N' ends step E*N + i + 1."""
    times = {}
    for arrival, text in lines:
        match = TIMM_LINE.search(text)
        if match:
            epoch, index, per_epoch = map(int, match.groups())
            times[epoch * per_epoch + index + 1] = arrival
    return times


def steady_rate(times, start, end, images_per_step):
    """Images/s between the first timestamped step >= start and the last <= end."""
    inside = sorted(step for step in times if start <= step <= end)
    if len(inside) < 2 or times[inside[-1]] <= times[inside[0]]:
        raise ValueError(f"need two timestamped steps in {start}..{end}, got {sorted(times)}")
    first, last = inside[0], inside[-1]
    return {"images_per_s": (last - first) * images_per_step / (times[last] - times[first]),
            "first_step": first, "last_step": last}


def round_order(names, r):
    """Round r runs the programs rotated by r: (trainer, plain), (plain, trainer), ..."""
    shift = r % len(names)
    return list(names[shift:]) + list(names[:shift])


def summarize(rates, baseline=BASELINE):
    """Per program: the median rate, the rates of every round, and against the baseline both the ratio of the
    medians and the ratios within each round (a drift of the machine over the rounds cancels in those).

    rates: {name: [images/s of round 0, round 1, ...]}.
    """
    out = {name: {"images_per_s": statistics.median(r), "rounds": list(r)} for name, r in rates.items()}
    for name, rec in out.items():
        if name != baseline and baseline in out:
            rec[f"ratio_to_{baseline}"] = rec["images_per_s"] / out[baseline]["images_per_s"]
            per_round = [a / b for a, b in zip(rec["rounds"], out[baseline]["rounds"])]
            rec[f"ratio_to_{baseline}_per_round"] = per_round
            rec[f"ratio_to_{baseline}_per_round_median"] = statistics.median(per_round)
    return out


# ----- running ------------------------------------------------------------------------------------------
class ProgramFailed(RuntimeError):
    """A benchmarked program exited with an error; the message ends with the tail of its output."""


def _check(name, returncode, output, argv):
    if returncode:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise ProgramFailed(f"{name} exited with code {returncode}: {' '.join(argv)}\n{tail}")


def run_lines(argv, env, cwd, timeout):
    """Run argv in a session of its own; (return code, [(arrival time.time(), line)]) of its stdout and stderr,
    read as they come. Past `timeout` seconds the whole session (torchrun and its workers) is killed."""
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, start_new_session=True)
    expired = threading.Event()

    def kill():
        expired.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    watchdog = threading.Timer(timeout, kill)
    watchdog.start()
    try:
        lines = [(time.time(), line.rstrip("\n")) for line in proc.stdout]
        proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            kill()
            proc.wait()
    if expired.is_set():
        lines.append((time.time(), f"killed after {timeout} s"))
    return proc.returncode, lines


def run_program(name, s, work, data_root, timm_train, timeout):
    """Run one program once in a fresh folder under `work`; its {step: time}, wall seconds and command."""
    folder = tempfile.mkdtemp(prefix=f"{name}-", dir=work)
    if name == "trainer":
        config = os.path.join(folder, "config.yaml")
        with open(config, "w") as f:
            yaml.safe_dump(trainer_config(s, data_root, folder), f, sort_keys=False)
        argv = trainer_argv(s, config)
    elif name == "plain":
        argv = plain_argv(s, data_root, os.path.join(folder, "times.json"))
    else:
        argv = timm_argv(s, timm_train, data_root, folder)
    start = time.perf_counter()
    code, lines = run_lines(argv, environment(s), folder, timeout)
    wall = time.perf_counter() - start
    _check(name, code, "\n".join(text for _, text in lines), argv)
    if name == "trainer":
        times = trainer_times(os.path.join(folder, "run", "metrics.jsonl"))
    elif name == "plain":
        with open(os.path.join(folder, "times.json")) as f:
            times = {int(k): v for k, v in json.load(f)["times"].items()}
    else:
        times = timm_times(lines)
    shutil.rmtree(folder, ignore_errors=True)  # the trainer's checkpoint, timm's output
    return {"times": times, "wall_s": wall, "argv": argv}


def timed_run(name, s, work, data_root, timm_train, timeout):
    """One run of program `name`: its steady-state rate, timestamps, wall seconds and command."""
    result = run_program(name, s, work, data_root, timm_train, timeout)
    rate = steady_rate(result["times"], s.warmup, s.steps, s.images_per_step)
    return {"program": name, **rate, "wall_s": result["wall_s"],
            "times": {str(k): v for k, v in sorted(result["times"].items())}, "argv": result["argv"]}


def run_trainer(s, rounds, cache_dir, timm_train=None, timeout=3600, progress=print):
    """`rounds` interleaved rounds of train.py, the plain loop (and timm's train.py); medians and ratios."""
    names = ["trainer", BASELINE] + (["timm"] if timm_train else [])
    data_root = png_folder(cache_dir, s.images, s.size, progress=progress) if s.data == "folder" else None
    per_epoch = steps_per_epoch(s)
    runs = []
    # SIGTERM raises SystemExit here, so that run_lines kills the program running (in a session of its own)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        with tempfile.TemporaryDirectory(prefix="sn-trainer-bench-") as work:
            for r in range(rounds):
                for name in round_order(names, r):
                    progress(f"trainer: round {r + 1}/{rounds}: {name}")
                    runs.append({"round": r, **timed_run(name, s, work, data_root, timm_train, timeout)})
                    progress(f"trainer: {name}: {runs[-1]['images_per_s']:.1f} images/s over steps "
                             f"{runs[-1]['first_step']}-{runs[-1]['last_step']}, {runs[-1]['wall_s']:.0f} s in all")
    finally:
        signal.signal(signal.SIGTERM, previous)
    notes = []
    if s.steps > per_epoch:
        notes.append(f"the window crosses epoch ends ({per_epoch} steps per epoch): each program restarts its "
                     "loader workers there")
    rates = {name: [r["images_per_s"] for r in runs if r["program"] == name] for name in names}
    return {"setup": dataclasses.asdict(s), "data_root": data_root, "steps_per_epoch": per_epoch,
            "rounds": rounds, "order": [round_order(names, r) for r in range(rounds)],
            "trainer_config": trainer_config(s, data_root, "<run folder>"),
            "programs": summarize(rates), "runs": runs, "notes": notes}
