"""Train a classifier.

  torchrun --nproc_per_node=G train.py --config CONFIG [section.key=value ...]
  python train.py --config CONFIG [overrides]            (one process)
  python train.py --config CONFIG --dry-run [--world W]  (print the setting and the resolved config, and exit)
  python train.py --list-configs | --list-norms         (the shipped configs; the norm types and their options)

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
from engine.cli import USER_ERRORS, error_line
from engine.distributed import init_distributed, shutdown
from engine.setting import effective_setting, norm_factory
from engine.stop import StopWatch


def parse_args(argv):
    def positive_int(text):
        if not text.strip().isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"must be a positive integer (processes), got {text!r}")
        return int(text)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML experiment config (see --list-configs)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the setting, the resolved config and the run folder, do not train")
    parser.add_argument("--world", type=positive_int, default=None,
                        help="with --dry-run: number of processes (default: batch.gpus)")
    parser.add_argument("--list-configs", action="store_true",
                        help="list the configs under configs/ with their setting and description, and exit")
    parser.add_argument("--list-norms", action="store_true",
                        help="list the norm types (norm.type) with their options (norm.*) and defaults, and exit")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=0.2")
    args = parser.parse_intermixed_args(argv)
    if args.config is None and not (args.list_configs or args.list_norms):
        parser.error("the following arguments are required: --config (or --list-configs, --list-norms)")
    return args


def norm_lines():
    """One line per registered norm type: its options and their defaults (stat_groups comes from the setting)."""
    from norms import available_norms
    from norms.factory import norm_options
    return [f"{name}: " + ", ".join(f"{key}={value!r}" for key, value in norm_options(name).items()
                                    if key != "stat_groups") for name in available_norms()]


def run_dir_for(cfg, config_path):
    return os.path.join(cfg.log.out_dir, cfg.log.name or os.path.splitext(os.path.basename(config_path))[0])


def dry_run(cfg, args):
    """Print the setting line, its notes, the resolved config and the run folder (last: train.sbatch reads it)."""
    import models
    cfg, setting, notes = effective_setting(cfg, args.world)
    # build the layers as training would (on the CPU: faster than the meta device for one build), so
    # option errors surface here, before Slurm starts any node
    models.build_model(cfg.model, norm_factory(cfg, setting))
    for line in [setting.describe()] + notes:
        print(line)
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip())
    print(f"run folder: {run_dir_for(cfg, args.config)}")
    return 0


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.list_configs or args.list_norms:
            from configs.catalog import catalog_lines
            print("\n".join((catalog_lines() if args.list_configs else []) + (norm_lines() if args.list_norms else [])))
            return 0
        cfg = load_config(args.config, args.overrides)
        if args.dry_run:
            return dry_run(cfg, args)
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
