"""Run every cell of a sweep file: as Slurm job arrays, or one after another on this machine.

  python scripts/sweep.py SWEEP.yaml [--out DIR] [--only GLOB ...] [--dry-run] [--force]
                          [--slurm | --local] [--gpus-per-node P] [--nodes N] [--procs-per-node K]
                          [--cpus-per-proc C] [--partition P] [--time T] [--sbatch-arg=ARG ...]
                          [--wait [--poll S]] [--python PATH] [-- extra overrides]

Cells with OUT/<run name>/final.json are finished and skipped. --force runs them again, and the trainer
then resumes each from its newest checkpoint (useful after raising train.epochs); to start a cell over,
delete its run folder or use another --out. See docs/cluster.md.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

from configs import ConfigError
from engine.setting import effective_setting
from launch import slurm, sweep as sw

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", help="sweep file (YAML)")
    p.add_argument("--out", help="folder of the run folders (default: runs/<sweep name>)")
    p.add_argument("--only", action="append", default=[], metavar="GLOB", help="run names to include (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print what would run, run and submit nothing")
    p.add_argument("--force", action="store_true",
                   help="run finished cells again: each resumes from its newest checkpoint, it does not start over "
                        "(for that, delete the run folder or use another --out)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--slurm", dest="mode", action="store_const", const="slurm",
                      help="submit job arrays (default when sbatch is on PATH)")
    mode.add_argument("--local", dest="mode", action="store_const", const="local",
                      help="run the cells here, one after another, through scripts/launch.sh")
    p.add_argument("--gpus-per-node", type=int, default=8,
                   help="GPUs per cluster node; 0: CPU-only cluster (default 8)")
    p.add_argument("--nodes", type=int, help="nodes per run (default: derived from the setting)")
    p.add_argument("--procs-per-node", type=int, help="processes per node (default: one per GPU)")
    p.add_argument("--cpus-per-proc", type=int,
                   help="CPUs to request per process (default: 1 on CPU-only clusters; with GPUs, the largest "
                        "data.workers among the shape's cells + 1, for the loader workers and the trainer)")
    p.add_argument("--partition", help="Slurm partition to submit to (default: the cluster's default partition)")
    p.add_argument("--time", help="time limit per run, sbatch syntax (e.g. 1-00:00:00)")
    p.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                   help="passed to sbatch as is (repeatable; write --sbatch-arg=--qos=high)")
    p.add_argument("--wait", action="store_true",
                   help="after submitting, wait until the submitted tasks have left the queue; exit code 1 if a "
                        "cell then has no final.json")
    p.add_argument("--poll", type=float, default=10.0, metavar="S", help="seconds between squeue polls (--wait)")
    default_python = os.path.join(REPO, ".venv", "bin", "python")
    p.add_argument("--python", default=default_python if os.access(default_python, os.X_OK) else "python3",
                   help="interpreter running train.py (default: .venv/bin/python when present, else python3)")
    args = p.parse_args(argv)
    args.extra = extra
    args.mode = args.mode or ("slurm" if shutil.which("sbatch") else "local")
    args.out = os.path.abspath(args.out) if args.out else None
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except (sw.SweepError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args):
    sweep = sw.load_sweep(args.sweep)
    out = args.out or os.path.abspath(os.path.join("runs", sweep.name))
    cells = sw.expand(sweep, out, args.extra)
    chosen = sw.select(cells, args.only)
    print(f"sweep {sweep.name}: {len(chosen)} of {len(cells)} cells, runs in {out}, mode {args.mode}")
    gpus_per_node = args.gpus_per_node
    if args.wait and args.mode != "slurm":
        raise sw.SweepError("--wait applies to --slurm only; --local already runs the cells one after another")
    if args.poll <= 0:
        raise sw.SweepError(f"--poll must be a positive number of seconds, got {args.poll}")
    if args.mode == "slurm" and not args.dry_run:
        missing = [cmd for cmd in ("sbatch", "squeue") if not shutil.which(cmd)]
        if missing:
            raise sw.SweepError(f"--slurm needs {' and '.join(missing)} on PATH, which this machine lacks; "
                                "run the cells here with --local")
    queued = _queued(out) if args.mode == "slurm" else {}
    todo = []
    for cell in chosen:
        cfg = sw.load_cell_config(cell)  # every cell is checked before anything starts
        if args.mode == "slurm":
            shape = sw.derive_shape(cfg.batch.gpus, gpus_per_node, args.nodes, args.procs_per_node)
            world = shape.world
        else:
            shape = None
            world = args.procs_per_node or sw.launch_nproc(cell.config, cell.overrides)
        if cell.finished() and not args.force:
            print(f"skip {cell.run_name}: finished ({cell.final_status()}, {cell.final_json()})")
        elif cell.run_name in queued:
            print(f"skip {cell.run_name}: Slurm job {queued[cell.run_name]} is still queued or running")
        else:
            _, setting, notes = effective_setting(cfg, world)
            todo.append((cell, shape, "; ".join([setting.describe()] + notes), cfg.data.workers))
    if not todo:
        print("nothing to run")
        return 0
    if args.mode == "local":
        return _run_local(args, todo)
    submitted = _submit(args, sweep, out, todo, gpus_per_node)
    return _wait(args, submitted) if args.wait and not args.dry_run else 0


def _queued(out):
    registry = os.path.join(out, ".sweep", "jobs.tsv")
    if not os.path.isfile(registry):
        return {}
    if not shutil.which("squeue"):  # only a dry run gets this far without squeue
        print("note: squeue is not on PATH, so this dry run cannot tell which cells are still queued")
        return {}
    return slurm.queued_runs(registry, [line.strip() for line in slurm.squeue()])


def _run_local(args, todo):
    failed = []
    env = {**os.environ, "PYTHON": args.python}
    for cell, _, setting, _ in todo:
        cmd = ["bash", os.path.join(REPO, "scripts", "launch.sh")]
        cmd += [f"--nproc={args.procs_per_node}"] if args.procs_per_node else []
        cmd += [cell.config, *cell.overrides]
        print(f"{'would run' if args.dry_run else 'run'} {cell.run_name}: {sw.command_line(cmd)}\n    {setting}",
              flush=True)
        if args.dry_run:
            continue
        before = _mtime(cell.final_json())
        start = time.monotonic()
        rc = subprocess.run(cmd, env=env).returncode
        print(f"{cell.run_name}: exit code {rc} after {time.monotonic() - start:.0f} s", flush=True)
        wrote_final = _mtime(cell.final_json()) not in (None, before)
        if rc != 0 and wrote_final:  # train.py exits 1 on divergence, after writing final.json: the cell is done
            print(f"{cell.run_name}: done ({cell.final_status()}, {cell.final_json()})", flush=True)
        elif rc != 0:
            failed.append(f"{cell.run_name} (exit {rc})")
    if failed:
        print(f"{len(failed)} of {len(todo)} cells failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _mtime(path):
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _submit(args, sweep, out, todo, gpus_per_node):
    """One job array per shape; returns {job id: [(cell, final.json's mtime before the submission)]}."""
    groups = {}
    for cell, shape, setting, workers in todo:
        groups.setdefault(shape, []).append((cell, setting, workers))
    folder, submitted = os.path.join(out, ".sweep"), {}
    for shape, members in groups.items():
        job_name = f"{sweep.name}-{shape}"
        cells = [cell for cell, _, _ in members]
        # GPU jobs: one CPU per loader worker plus one for the trainer, per process
        cpus = args.cpus_per_proc or (1 if gpus_per_node == 0 else max(w for _, _, w in members) + 1)
        export = {"REPO": REPO, "PYTHON": args.python, "PROCS_PER_NODE": str(shape.procs_per_node),
                  **({"FORCE": "1"} if args.force else {})}
        cells_file = slurm.write_cells_file(folder, job_name, cells) if not args.dry_run else \
            os.path.join(folder, f"{job_name}-XXXXXXXX.cells")
        cmd = slurm.sbatch_command(cells_file, len(members), shape, job_name, os.path.join(folder, "logs"),
                                gpus_per_node, cpus, args.partition, args.time, args.sbatch_arg, export)
        print(f"{'would submit' if args.dry_run else 'submit'} {len(members)} cell(s) on {shape.nodes} node(s) x "
              f"{shape.procs_per_node} process(es): {sw.command_line(cmd)}")
        for i, (cell, setting, _) in enumerate(members):
            print(f"  [{i}] {cell.run_name}: train.py {sw.command_line(cell.train_args())}\n      {setting}")
        if args.dry_run:
            continue
        os.makedirs(os.path.join(folder, "logs"), exist_ok=True)
        # read before sbatch: a task may finish before the submission returns
        before = [(cell, _mtime(cell.final_json())) for cell in cells]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            raise sw.SweepError(f"sbatch failed ({res.returncode}): {res.stderr.strip()}")
        job_id = slurm.parse_job_id(res.stdout)
        slurm.record_jobs(os.path.join(folder, "jobs.tsv"), job_id, cells)
        submitted[job_id] = before
        print(f"submitted job array {job_id} ({job_name}, {len(members)} task(s)); logs: "
              f"{os.path.join(folder, 'logs', f'{job_name}-{job_id}_<task>.out')}", flush=True)
    return submitted


def _wait(args, submitted):
    """Poll squeue until no task of the submitted arrays is left; 1 if a cell then has no new final.json."""
    total = sum(len(cells) for cells in submitted.values())
    print(f"waiting for job array(s) {', '.join(submitted)} to leave the queue (squeue every {args.poll:g} s)",
          flush=True)
    start, last, printed, errors = time.monotonic(), None, 0.0, 0
    while True:
        try:
            lines = slurm.squeue("%i %t")
            errors = 0
        except sw.SweepError as e:  # a controller that is busy for a moment should not end a day-long wait
            errors += 1
            if errors >= 10:
                raise
            print(f"{e}; trying again", file=sys.stderr, flush=True)
            time.sleep(args.poll)
            continue
        states = [state for task, state in (line.split() for line in lines) if task.split("_", 1)[0] in submitted]
        if not states:
            break
        counts = {s: states.count(s) for s in sorted(set(states), key=lambda s: (s != "R", s))}
        # a line per change, and one every 5 minutes, keeps a day-long wait's log short
        if counts != last or time.monotonic() - printed >= 300:
            printed, last = time.monotonic(), counts
            print(f"waiting: {len(states)} of {total} task(s) in the queue ("
                  f"{', '.join(f'{n} {slurm.STATES.get(s, s)}' for s, n in counts.items())}) after "
                  f"{time.monotonic() - start:.0f} s", flush=True)
        time.sleep(args.poll)
    print(f"all {total} task(s) left the queue after {time.monotonic() - start:.0f} s", flush=True)
    missing = [cell.run_name for cells in submitted.values() for cell, before in cells
               if _mtime(cell.final_json()) in (None, before)]
    if missing:
        print(f"{len(missing)} of {total} cells wrote no final.json: {', '.join(missing)}; see their logs",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
