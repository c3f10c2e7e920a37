"""Slurm job arrays of sweep cells: the cells file train.sbatch reads, the sbatch command, the job registry, squeue."""
import os
import subprocess
import tempfile

from .sweep import SweepError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cells_lines(cells):
    """One tab-separated line per cell (run name, config, overrides), read by train.sbatch --cells."""
    lines = []
    for cell in cells:
        fields = [cell.run_name, cell.config, *cell.overrides]
        bad = next((f for f in fields if "\t" in f or "\n" in f), None)
        if bad is not None:
            raise SweepError(f"cell {cell.run_name}: {bad!r} holds a tab or newline, which a cells file cannot carry")
        lines.append("\t".join(fields))
    return "\n".join(lines) + "\n"


def write_cells_file(folder, job_name, cells):
    """A new cells file in folder (a still-pending array keeps reading the file it was given); returns its path."""
    text = cells_lines(cells)
    os.makedirs(folder, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=f"{job_name}-", suffix=".cells", dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def sbatch_command(cells_file, count, shape, job_name, log_dir, gpus_per_node, cpus_per_proc=None,
                   partition=None, time=None, extra=(), export=None):
    """The sbatch argv submitting one job array over a cells file; export: variables the job gets."""
    # explicit --export/--chdir: sites that set SBATCH_EXPORT=NONE would drop REPO, PYTHON, PROCS_PER_NODE
    for key, value in (export or {}).items():
        if "," in value:
            raise SweepError(f"{key}={value} holds a comma, which sbatch --export cannot carry; "
                             "use a path without commas")
    cmd = ["sbatch", "--parsable", f"--job-name={job_name}", f"--array=0-{count - 1}", f"--nodes={shape.nodes}",
           "--ntasks-per-node=1", f"--output={os.path.join(log_dir, '%x-%A_%a.out')}", f"--chdir={REPO}",
           "--export=" + ",".join(["ALL"] + [f"{k}={v}" for k, v in (export or {}).items()])]
    if gpus_per_node:
        cmd.append(f"--gpus-per-node={shape.procs_per_node}")
    if cpus_per_proc:
        cmd.append(f"--cpus-per-task={cpus_per_proc * shape.procs_per_node}")
    if partition:
        cmd.append(f"--partition={partition}")
    if time:
        cmd.append(f"--time={time}")
    return cmd + list(extra) + [os.path.join(REPO, "scripts", "slurm", "train.sbatch"), "--cells", cells_file]


def parse_job_id(sbatch_stdout):
    """sbatch --parsable prints 'jobid' or 'jobid;cluster'."""
    text = sbatch_stdout.strip().split(";")[0]
    if not text.isdigit():
        raise SweepError(f"sbatch printed {sbatch_stdout.strip()!r}, not a job id")
    return text


def record_jobs(registry, job_id, cells):
    """Append array task -> run name lines, so a later sweep sees which cells are still queued or running."""
    os.makedirs(os.path.dirname(registry), exist_ok=True)
    with open(registry, "a") as f:
        f.writelines(f"{job_id}_{i}\t{cell.run_name}\n" for i, cell in enumerate(cells))


def queued_runs(registry, squeue_ids):
    """Run name -> array task id, for recorded tasks that squeue still lists (pending, running, requeued)."""
    if not os.path.isfile(registry):
        return {}
    active = set(squeue_ids)
    out = {}
    with open(registry) as f:
        for line in f:
            task, _, run_name = line.rstrip("\n").partition("\t")
            if task in active:
                out[run_name] = task
    return out


def squeue(fields="%i"):
    """One line per job array task that is pending, running or requeued."""
    res = subprocess.run(["squeue", "-h", "-r", "-o", fields], capture_output=True, text=True)
    if res.returncode:
        raise SweepError(f"squeue failed ({res.stderr.strip()}); cannot tell which cells are still queued")
    return res.stdout.splitlines()


# squeue's compact job states, as a sweep's --wait reports them
STATES = {"PD": "pending", "R": "running", "CG": "completing", "CF": "configuring", "S": "suspended",
          "RQ": "requeued", "RS": "resizing", "SE": "requeued"}
