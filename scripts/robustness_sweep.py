"""Run every cell of a robustness sweep file: eval.py per model x method x test batch, one after another.

  python scripts/robustness_sweep.py SWEEP.yaml --out DIR [--only GLOB ...] [--set KEY=VALUE ...] [--dry-run]

Each cell writes its result record to DIR/<cell>.json (cells repeating another with a second stream seed:
DIR/stream_seed<S>/<cell>.json, which the collector would otherwise count as the same cell). Cells whose record
exists are skipped, so a rerun resumes. A failed cell does not stop the others; the exit code is then 1.
Collect with: python scripts/collect_results.py --robustness DIR/*.json --out TABLE_DIR. See
docs/robustness.md.
"""
import argparse
import json
import os
import subprocess
import sys
import time

from launch import robustness as rb
from launch.sweep import command_line

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", help="robustness sweep file (YAML)")
    p.add_argument("--out", required=True, help="folder of the result records")
    p.add_argument("--only", action="append", default=[], metavar="GLOB", help="cell names to include (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="replace a top-level key of the sweep file, value in YAML (repeatable), e.g. "
                        "--set corruptions=data/fashion_mnist_c_pc20 --set severities=[1,3]")
    p.add_argument("--dry-run", action="store_true", help="print the eval.py commands, run nothing")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        sweep = rb.load_sweep(args.sweep, args.set)
        cells = rb.expand(sweep, args.out)
        chosen = rb.select(cells, args.only)
    except rb.RobustnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"robustness sweep {sweep.name}: {len(chosen)} of {len(cells)} cells, records in "
          f"{os.path.abspath(args.out)}", flush=True)
    failed, ran = [], 0
    for cell in chosen:
        if cell.finished():
            print(f"skip {cell.name}: finished ({cell.record})", flush=True)
            continue
        try:
            checkpoint = rb.checkpoint_of(cell.run_dir, sweep.checkpoint)
        except rb.RobustnessError as e:
            if not args.dry_run:
                print(f"{cell.name}: failed: {e}", file=sys.stderr, flush=True)
                failed.append(f"{cell.name} (no checkpoint)")
                continue
            checkpoint = os.path.join(cell.run_dir, "best.pt" if sweep.checkpoint == "best" else "checkpoint_*.pt")
        cmd = [sys.executable, os.path.join(REPO, "eval.py"), *rb.eval_args(sweep, cell, checkpoint)]
        print(f"{'would run' if args.dry_run else 'run'} {cell.name}: {command_line(cmd)}", flush=True)
        if args.dry_run:
            continue
        ran += 1
        os.makedirs(os.path.dirname(cell.record), exist_ok=True)
        start = time.monotonic()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # stdout: the record again; stderr passes
        print(f"{cell.name}: exit code {proc.returncode} after {time.monotonic() - start:.0f} s"
              + (f", {summary(cell.record)}" if proc.returncode == 0 else ""), flush=True)
        if proc.returncode != 0 or not cell.finished():
            failed.append(f"{cell.name} (exit {proc.returncode})")
    for cell in chosen:
        if cell.repeats and not args.dry_run:
            base = next((c for c in cells if c.name == cell.repeats), None)
            print(f"stream seed: {cell.name} {summary(cell.record)}; {cell.repeats} "
                  f"{summary(base.record) if base else 'is no cell of this sweep'}")
    if failed:
        print(f"{len(failed)} of {len(chosen)} cells failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    if not ran and not args.dry_run:
        print("nothing to run")
    return 0


def summary(record):
    """`mean error 12.34%` of a result record, or why there is none."""
    try:
        with open(record) as f:
            return f"mean error {json.load(f)['summary']['mean_error']:.2f}%"
    except (OSError, ValueError, KeyError, TypeError):
        return "no record yet"


if __name__ == "__main__":
    sys.exit(main())
