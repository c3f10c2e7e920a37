"""Run every cell of a sweep file: as Slurm job arrays, or one after another on this machine.

  python scripts/sweep.py SWEEP.yaml [--out DIR] [--only GLOB ...] [--dry-run] [--force]
                          [--slurm | --local] [--gpus-per-node P] [--nodes N] [--procs-per-node K]
                          [--partition P] [--time T] [--sbatch-arg=ARG ...] [-- extra overrides]

Cells with OUT/<run name>/final.json are finished and skipped (--force runs them again: the trainer then
resumes from their newest checkpoint). See README, "Sweeps".
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from configs import ConfigError  # noqa: E402
from engine import sweep as sw  # noqa: E402
from engine.setting import apply_setting_rules, resolve_setting  # noqa: E402


def parse_args(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", help="sweep file (YAML)")
    p.add_argument("--out", help="folder of the run folders (default: runs/<sweep name>)")
    p.add_argument("--only", action="append", default=[], metavar="GLOB", help="run names to include (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print what would run, run and submit nothing")
    p.add_argument("--force", action="store_true", help="run finished cells again (they resume from their checkpoints)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--slurm", dest="mode", action="store_const", const="slurm",
                      help="submit job arrays (default when sbatch is on PATH)")
    mode.add_argument("--local", dest="mode", action="store_const", const="local",
                      help="run the cells here, one after another, through scripts/launch.sh")
    p.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per cluster node; 0: CPU-only cluster (default 8)")
    p.add_argument("--nodes", type=int, help="nodes per run (default: derived from the setting)")
    p.add_argument("--procs-per-node", type=int, help="processes per node (default: one per GPU)")
    p.add_argument("--cpus-per-proc", type=int, help="CPUs to request per process (default: 1 on CPU-only clusters, "
                   "the cluster's default otherwise)")
    p.add_argument("--partition")
    p.add_argument("--time", help="time limit per run, sbatch syntax (e.g. 1-00:00:00)")
    p.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                   help="passed to sbatch as is (repeatable; write --sbatch-arg=--qos=high)")
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
    cpus = args.cpus_per_proc or (1 if gpus_per_node == 0 else None)
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
            cfg, notes = apply_setting_rules(cfg)
            todo.append((cell, shape, "; ".join([resolve_setting(cfg.batch, cfg.optim.lr, world).describe()] + notes)))
    if not todo:
        print("nothing to run")
        return 0
    if args.mode == "local":
        return _run_local(args, todo)
    return _submit(args, sweep, out, todo, gpus_per_node, cpus)


def _queued(out):
    registry = os.path.join(out, ".sweep", "jobs.tsv")
    if not os.path.isfile(registry):
        return {}
    res = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True)
    if res.returncode:
        raise sw.SweepError(f"squeue failed ({res.stderr.strip()}); cannot tell which cells are still queued")
    return sw.queued_runs(registry, res.stdout.split())


def _run_local(args, todo):
    failed = []
    env = {**os.environ, "PYTHON": args.python}
    for cell, _, setting in todo:
        cmd = ["bash", os.path.join(REPO, "scripts", "launch.sh")]
        cmd += [f"--nproc={args.procs_per_node}"] if args.procs_per_node else []
        cmd += [cell.config, *cell.overrides]
        print(f"{'would run' if args.dry_run else 'run'} {cell.run_name}: {sw.command_line(cmd)}\n    {setting}",
              flush=True)
        if args.dry_run:
            continue
        start = time.monotonic()
        rc = subprocess.run(cmd, env=env).returncode
        print(f"{cell.run_name}: exit code {rc} after {time.monotonic() - start:.0f} s", flush=True)
        if rc != 0:
            failed.append(f"{cell.run_name} (exit {rc})")
    if failed:
        print(f"{len(failed)} of {len(todo)} cells failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _submit(args, sweep, out, todo, gpus_per_node, cpus):
    groups = {}
    for cell, shape, setting in todo:
        groups.setdefault(shape, []).append((cell, setting))
    env = {"PROCS_PER_NODE": None, "REPO": REPO, "PYTHON": args.python, **({"FORCE": "1"} if args.force else {})}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for shape, members in groups.items():
        job_name = f"{sweep.name}-{shape}"
        # a new file per submission: a still-pending array keeps reading the file it was given
        cells_file = os.path.join(out, ".sweep", f"{job_name}-{stamp}.cells")
        cmd = sw.sbatch_command(cells_file, len(members), shape, job_name, os.path.join(out, ".sweep", "logs"),
                                gpus_per_node, cpus, args.partition, args.time, args.sbatch_arg)
        env["PROCS_PER_NODE"] = str(shape.procs_per_node)
        print(f"{'would submit' if args.dry_run else 'submit'} {len(members)} cell(s) on {shape.nodes} node(s) x "
              f"{shape.procs_per_node} process(es): {sw.command_line(cmd, env)}")
        for i, (cell, setting) in enumerate(members):
            print(f"  [{i}] {cell.run_name}: train.py {sw.command_line(cell.train_args())}\n      {setting}")
        if args.dry_run:
            continue
        sw.write_cells_file(cells_file, [cell for cell, _ in members])
        os.makedirs(os.path.join(out, ".sweep", "logs"), exist_ok=True)
        res = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
        if res.returncode:
            raise sw.SweepError(f"sbatch failed ({res.returncode}): {res.stderr.strip()}")
        job_id = sw.parse_job_id(res.stdout)
        sw.record_jobs(os.path.join(out, ".sweep", "jobs.tsv"), job_id, [cell for cell, _ in members])
        print(f"submitted job array {job_id} ({job_name}, {len(members)} task(s)); logs: "
              f"{os.path.join(out, '.sweep', 'logs', f'{job_name}-{job_id}_<task>.out')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
