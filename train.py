"""Train a classifier.

  torchrun --nproc_per_node=G train.py --config CONFIG [section.key=value ...]
  python train.py --config CONFIG [overrides]            (one process)
  python train.py --config CONFIG --dry-run [--world W]  (print the resolved setting and exit)

Rerunning the same command continues from the newest readable checkpoint (checkpoint.resume=auto).
SIGTERM, SIGUSR1 (Slurm's time-limit signal, preemption), Ctrl-C (SIGINT) or the death of the
torchrun agent make every rank stop at the next step, write a checkpoint and exit with code 143
(130 after Ctrl-C; a second Ctrl-C aborts at once). See docs/training.md for what survives what.
"""
import argparse
import os
import sys

import yaml

from configs import load_config, to_dict
from engine.distributed import USER_ERRORS, error_line, init_distributed, shutdown
from engine.setting import apply_setting_rules, resolve_setting
from engine.stop import StopWatch


def parse_args(argv):
    def positive_int(text):
        if not text.strip().isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"must be a positive integer (processes), got {text!r}")
        return int(text)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML experiment config")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and setting, do not train")
    parser.add_argument("--world", type=positive_int, default=None,
                        help="with --dry-run: number of processes (default: gpus)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=0.2")
    return parser.parse_intermixed_args(argv)


def run_dir_for(cfg, config_path):
    return os.path.join(cfg.log.out_dir, cfg.log.name or os.path.splitext(os.path.basename(config_path))[0])


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.dry_run:
            import dataclasses
            import models
            import norms
            cfg, notes = apply_setting_rules(cfg)
            setting = resolve_setting(cfg.batch, cfg.optim.lr, args.world or cfg.batch.gpus)
            # build the layers as training would (on the CPU: faster than the meta device for one build), so
            # option errors surface here, before Slurm starts any node
            norm = norms.build_norm(**dataclasses.asdict(cfg.norm), stat_groups=setting.stat_groups)
            models.build_model(cfg.model, norm)
            print(yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip())
            for line in [setting.describe()] + notes:
                print(line)
            print(f"run folder: {run_dir_for(cfg, args.config)}")
            return 0
        from engine.trainer import Trainer  # heavy imports only when training
        env = init_distributed()
        trainer = Trainer(cfg, env, run_dir_for(cfg, args.config))
    except USER_ERRORS as e:  # ConfigError is a ValueError
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    try:
        trainer.fit()
    except FloatingPointError as e:  # divergence: a result of the experiment, recorded for sweeps and the collector
        trainer.record_divergence(e)
        print(f"error (rank {env.rank}): {e}", file=sys.stderr)
        return 1
    except USER_ERRORS as e:  # e.g. the disk filled up while writing a checkpoint
        if env.is_main:
            print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"error (rank {env.rank}): {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the second Ctrl-C
        if env.is_main:
            print(f"aborted by a second Ctrl-C; the checkpoints in {trainer.run_dir} are intact", file=sys.stderr)
        return 130
    finally:
        # the run's outcome is on disk: a stop signal arriving now (the interpreter resets Python handlers
        # to the default action, termination, while it shuts down) must not turn it into a crash
        StopWatch.ignore_all()
        shutdown()
    return trainer.exit_code


if __name__ == "__main__":
    sys.exit(main())
