"""Host synchronizations per training step of train.py between print steps, on one GPU.

  python -m benchmarks.host_syncs --batch 32,256 --json OUT.json

train.py's main runs in this process on the trainer section's PNG folder and config (ResNet-18 at 32 px,
BN), with no print step inside the window. Every Trainer.train_step is wrapped: from step `--first`
to the step before the run's last one, torch.cuda.set_sync_debug_mode("warn") is on, and the
synchronization warnings caught from the start of one step to the start of the next are that step's
(the trainer's own work between steps included). tests/engine/test_step_sync.py asserts the same
count is zero; this reports it.
"""
import argparse
import importlib.util
import os
import sys
import tempfile
import warnings

import yaml

from . import trainer as bench
from .cli import write_json

MARKER = "synchroniz"  # torch's "called a synchronizing CUDA operation"


def count_syncs(run, cls, counted, set_mode):
    """({step index: synchronization warnings}, distinct messages) while run() trains, cls.train_step wrapped.

    counted(trainer) says whether the step about to run is counted (its step_in_epoch is the index);
    set_mode(mode) switches the warnings on ("warn") and off ("default").
    """
    original, counts, current = cls.train_step, {}, {"step": None, "mark": 0}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        def close():
            if current["step"] is not None:
                counts[current["step"]] = sum(MARKER in str(w.message).lower() for w in caught[current["mark"]:])

        def counting(self, *args, **kwargs):
            close()
            on = counted(self)
            set_mode("warn" if on else "default")
            current.update(step=self.step_in_epoch if on else None, mark=len(caught))
            return original(self, *args, **kwargs)

        cls.train_step = counting
        try:
            run()
        finally:
            cls.train_step = original
            set_mode("default")
            close()
        messages = sorted({str(w.message).splitlines()[0] for w in caught if MARKER in str(w.message).lower()})
    return counts, messages


def summary(counts):
    """Steps counted, total, mean and largest count per step."""
    values = list(counts.values())
    return {"steps_counted": len(values), "total": sum(values),
            "per_step_mean": sum(values) / len(values) if values else None,
            "per_step_max": max(values) if values else None}


def parser():
    p = argparse.ArgumentParser(description="Host synchronizations per train.py step between print steps "
                                "(CUDA, one process, BN); prints one line per batch size, --json for the counts.")
    p.add_argument("--batch", type=lambda t: [int(v) for v in t.split(",") if v], default=[32, 256],
                   help="samples per GPU, comma-separated")
    p.add_argument("--steps", type=int, default=40, help="steps run (the last one ends the run)")
    p.add_argument("--first", type=int, default=3, help="first counted step (earlier ones allocate)")
    p.add_argument("--folder-steps", type=int, default=200, help="the PNG folder holds batch * this many images "
                   "(the trainer section's folder, reused from --cache-dir)")
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers")
    p.add_argument("--tensorboard", choices=["true", "false"], default="true",
                   help="log.tensorboard (false where tensorboardX is not installed)")
    p.add_argument("--cache-dir", default=None, help="where the generated PNG folder is kept")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu: the same run where nothing synchronizes (counts 0), to test this program")
    p.add_argument("--json", metavar="PATH", help="write the counts here")
    return p


def _train_main():
    spec = importlib.util.spec_from_file_location("train_script", os.path.join(bench.REPO, "train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def run_batch(batch, args, train_main, work):
    import torch

    from engine.trainer import Trainer
    s = bench.Setup(device=args.device, world=1, batch=batch, steps=args.steps, warmup=args.first, data="folder",
                    images=batch * args.folder_steps, size=32, depth=18, width=64, precision="fp32",
                    workers=args.workers, threads=1)
    root = bench.png_folder(args.cache_dir, s.images, s.size, progress=lambda m: print(m, flush=True))
    cfg = bench.trainer_config(s, root, os.path.join(work, f"b{batch}"))
    cfg["log"].update(print_every=10 * args.steps, tensorboard=args.tensorboard == "true")
    path = os.path.join(work, f"b{batch}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    def counted(t):  # from --first to before the run's last step (max_iters) or the epoch's, which read at once
        return args.first <= t.step_in_epoch < min(t.steps_per_epoch, args.steps) - 1
    codes = []
    set_mode = torch.cuda.set_sync_debug_mode if args.device == "cuda" else lambda mode: None
    counts, messages = count_syncs(lambda: codes.append(train_main(["--config", path])), Trainer, counted, set_mode)
    if codes != [0]:
        raise RuntimeError(f"train.py exited with {codes}")
    return {"batch": batch, "steps": args.steps, "first": args.first, "messages": messages[:5],
            "per_step": {str(k): v for k, v in counts.items()}, **summary(counts)}


def main(argv=None):
    args = parser().parse_args(argv)
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: host_syncs needs CUDA (torch.cuda.is_available() is False); --device cpu runs it where "
              "nothing synchronizes", file=sys.stderr)
        return 2
    if args.cache_dir is None:
        from .pipeline import default_cache_dir
        args.cache_dir = default_cache_dir()
    train_main, runs = _train_main(), []
    with tempfile.TemporaryDirectory(prefix="sn-host-syncs-") as work:
        for batch in args.batch:
            runs.append(run_batch(batch, args, train_main, work))
            r = runs[-1]
            print(f"batch {batch}: {r['total']} host synchronizations in {r['steps_counted']} steps "
                  f"(max {r['per_step_max']} per step)", flush=True)
    if args.json:
        write_json(args.json, {"runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
