"""Sweeps and requeueing on a real one-node Slurm cluster (slurmctld, slurmd, munged started for the tests)."""
import csv
import glob
import os
import re
import subprocess
import sys
import time

import pytest

from launch import slurm, sweep as sw
from tests.engine.tiny import REPO, make_image_folder, write_config
from tests.scripts.slurm_cluster import job_fields, running_cluster
from tests.scripts.tiny_sweep import TRAIN_IMAGES, read_final, sweep_background, sweep_cli, write_sweep

pytestmark = [pytest.mark.slurm, pytest.mark.multiprocess]

SBATCH_SCRIPT = os.path.join(REPO, "scripts", "slurm", "train.sbatch")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    slurm = running_cluster(tmp_path_factory.mktemp("slurm"))
    yield slurm
    slurm.stop()


def wait_for(condition, timeout, what, cluster):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n" + cluster.log_tails())
        time.sleep(0.2)


def test_sweep_submits_a_job_array_that_trains_every_cell_and_feeds_the_table(cluster, tmp_path):
    sweep = write_sweep(str(tmp_path), norms=("bn", "gn", "sn"), settings=("2x4",))
    out = tmp_path / "runs"
    args = [sweep, "--slurm", "--gpus-per-node", "0", "--out", out]

    dry = sweep_cli(args + ["--dry-run"], env=cluster.env)
    assert dry.returncode == 0, dry.stderr
    assert "would submit 3 cell(s) on 1 node(s) x 1 process(es)" in dry.stdout and "--cpus-per-task=1" in dry.stdout
    assert cluster.queue() == [] and not (out / ".sweep").exists()

    # SBATCH_EXPORT=NONE (some sites set it) must not cost the jobs REPO, PYTHON and PROCS_PER_NODE
    waiting = sweep_background(args + ["--wait", "--poll", "1"], env={**cluster.env, "SBATCH_EXPORT": "NONE"})
    try:
        registry = out / ".sweep" / "jobs.tsv"
        wait_for(lambda: waiting.poll() is not None
                 or registry.exists() and len(registry.read_text().splitlines()) == 3,
                 60, "the submitted array", cluster)
        # the array is still queued or running: nothing is submitted twice
        pending = sweep_cli(args, env=cluster.env)
        stdout, stderr = waiting.communicate(timeout=300)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 0, stdout + stderr
    job = re.search(r"submitted job array (\d+) \(tiny-1x1, 3 task\(s\)\)", stdout)
    assert job, stdout
    job = job[1]
    assert pending.returncode == 0 and "submitted" not in pending.stdout, pending.stdout + pending.stderr
    for i, norm in enumerate(("bn", "gn", "sn")):
        assert f"skip tiny_{norm}_2x4: Slurm job {job}_{i} is still queued or running" in pending.stdout
    # --wait returned only once the array had left the queue, and said how it went
    assert cluster.queue() == [] and re.search(r"^waiting: [1-3] of 3 task\(s\) in the queue \(", stdout, re.M), stdout
    assert re.search(r"^all 3 task\(s\) left the queue after \d+ s$", stdout, re.M), stdout

    tasks = {int(t["ArrayTaskId"]): t for t in job_fields(cluster, job)}
    assert sorted(tasks) == [0, 1, 2]
    finals = {}
    for i, norm in enumerate(("bn", "gn", "sn")):
        run = f"tiny_{norm}_2x4"
        log = out / ".sweep" / "logs" / f"tiny-1x1-{job}_{i}.out"
        assert (tasks[i]["JobState"], tasks[i]["ExitCode"]) == ("COMPLETED", "0:0"), log.read_text()
        assert f"array task {i}: cell {run}" in log.read_text()
        final = finals[norm] = read_final(out / run)
        # one CPU process for the (2, 4) setting: it emulates both GPUs, total batch 8
        assert final["status"] == "finished" and final["iterations"] == TRAIN_IMAGES // 8, final
        assert {k: final["setting"][k] for k in ("gpus", "samples_per_gpu", "world", "stat_groups")} == \
            {"gpus": 2, "samples_per_gpu": 4, "world": 1, "stat_groups": 2}

    again = sweep_cli(args, env=cluster.env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(": finished (finished, ") == 3 and "nothing to run" in again.stdout
    assert "submitted" not in again.stdout and cluster.queue() == []

    table = tmp_path / "table"
    collect = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "collect_results.py"), str(out),
                              "--out", str(table)], capture_output=True, text=True, cwd=REPO)
    assert collect.returncode == 0, collect.stderr
    with open(table / "results.csv") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    for norm, final in finals.items():
        row = rows[f"tiny_{norm}_2x4"]
        assert (row["norm"], row["gpus"], row["samples_per_gpu"], row["status"]) == (norm, "2", "4", "finished")
        assert float(row["top1"]) == pytest.approx(final["top1"])
    markdown = (table / "results.md").read_text().splitlines()
    header = next(l for l in markdown if "(2,4)" in l)
    column = [c.strip() for c in header.split("|")].index("(2,4)")
    for norm, final in finals.items():
        row = next(l for l in markdown if l.startswith(f"| {norm.upper()} "))
        assert [c.strip() for c in row.split("|")][column] == f"{final['top1']:.2f}"


def test_time_limit_signal_requeues_one_array_task_which_resumes_to_the_end(cluster, tmp_path):
    """USR1 to one task's batch shell (what --signal=B:USR1@300 sends): that task checkpoints, is requeued and
    resumes; the other task of the array, running beside it, is neither signalled nor requeued."""
    epochs = 40  # long enough that the signal lands mid-run (with the compiled CPU kernels SN trains fast)
    sweep = write_sweep(str(tmp_path), norms=("bn", "sn"), overrides=[
        f"train.epochs={epochs}", "checkpoint.every_iters=10", "checkpoint.every_epochs=0", "train.eval_every=10",
        "log.print_every=20", "log.tensorboard=false"])
    cells = sw.expand(sw.load_sweep(sweep), str(tmp_path / "runs"))
    cells_file = slurm.write_cells_file(str(tmp_path / "cells"), "tiny", cells)
    # one CPU per task, so that both tasks run at once; two processes each (Slurm does not bind them here);
    # REPO defaults to the submit directory
    job = cluster.client(["sbatch", "--parsable", "--array=0-1", "--nodes=1", "--ntasks-per-node=1",
                          "--cpus-per-task=1", f"--output={tmp_path}/task_%a.out", "--export=ALL,PROCS_PER_NODE=2",
                          SBATCH_SCRIPT, "--cells", cells_file], cwd=REPO).stdout.strip()
    logs = [tmp_path / f"task_{i}.out" for i in (0, 1)]

    def both_training():
        tasks = job_fields(cluster, job)
        if any(t["JobState"] in ("COMPLETED", "FAILED") for t in tasks):
            raise AssertionError("a task ended before both had checkpointed:\n" +
                                 "\n".join(l.read_text() for l in logs if l.exists()))
        return len(tasks) == 2 and all(t["JobState"] == "RUNNING" for t in tasks) and \
            all(glob.glob(os.path.join(c.run_dir, "checkpoint_*.pt")) for c in cells)
    wait_for(both_training, 240, "both array tasks to checkpoint", cluster)
    # the task whose job id is the array's own id: scancel/scontrol given that id act on the whole array
    [target] = [t for t in job_fields(cluster, job) if t["JobId"] == t["ArrayJobId"]]
    hit = int(target["ArrayTaskId"])
    other = 1 - hit
    cluster.client(["scancel", "--signal=USR1", "--batch", f"{job}_{hit}"])
    wait_for(lambda: all(os.path.exists(c.final_json()) for c in cells) and not cluster.queue(), 300,
             "both tasks to finish", cluster)

    tasks = {int(t["ArrayTaskId"]): t for t in job_fields(cluster, job)}
    text, other_text = logs[hit].read_text(), logs[other].read_text()
    assert (tasks[hit]["JobState"], tasks[hit]["Restarts"], tasks[hit]["ExitCode"]) == ("COMPLETED", "1", "0:0"), text
    assert (tasks[other]["JobState"], tasks[other]["Restarts"], tasks[other]["ExitCode"]) == \
        ("COMPLETED", "0", "0:0"), other_text
    assert "stopping on signal" not in other_text and "got SIG" not in other_text and "(restart 1)" not in other_text

    assert "train.sbatch: got SIGUSR1" in text and f"requeueing job {job}_{hit}" in text
    stopped = re.findall(r"stopping on signal SIGUSR1: checkpoint written at iteration (\d+)", text)
    resumed = re.findall(r"resumed from (\S+): epoch \d+, iteration (\d+)", text)
    assert len(stopped) == 1 and len(resumed) == 1, text
    assert resumed[0] == (os.path.join(cells[hit].run_dir, f"checkpoint_{int(stopped[0]):09d}.pt"), stopped[0])
    assert 10 <= int(stopped[0]) < epochs * TRAIN_IMAGES // 8
    assert text.index("(restart 0)") < text.index("got SIGUSR1") < text.index("(restart 1)") \
        < text.index("resumed from")
    # torchrun outlived USR1 and reported its workers' own exit (train.py's 143 after a checkpoint); killed by
    # USR1, srun would name that signal; given SIGTERM, torchrun would log a death signal and SignalException
    assert re.search(r"exitcode\s*:\s*143 ", text), text
    assert "User defined signal" not in text and "death signal" not in text and "SignalException" not in text, text
    for cell in cells:
        final = read_final(cell.run_dir)
        assert final["status"] == "finished" and final["iterations"] == epochs * TRAIN_IMAGES // 8
        assert final["setting"]["world"] == 2


def test_failed_runs_are_not_requeued_and_finished_runs_not_rerun(cluster, tmp_path):
    root = make_image_folder(str(tmp_path / "data"))
    config = write_config(str(tmp_path), root, norm="bn", gpus=2, b=4, epochs=1)
    done_dir = tmp_path / "runs" / "done"
    os.makedirs(done_dir)
    (done_dir / "final.json").write_text('{"status": "finished"}')
    jobs = {}
    for case, extra in (("failed", ["data.root=" + str(tmp_path / "missing")]), ("bad_config", ["optim.lrr=1"]),
                        ("done", ["log.name=done"])):
        jobs[case] = cluster.client(["sbatch", "--parsable", f"--output={tmp_path / case}.out", SBATCH_SCRIPT, config,
                                     *extra], cwd=REPO).stdout.strip()
    cluster.wait_empty(180)
    logs = {case: (tmp_path / f"{case}.out").read_text() for case in jobs}
    states = {case: job_fields(cluster, job)[0] for case, job in jobs.items()}
    for case in ("failed", "bad_config"):
        assert (states[case]["JobState"], states[case]["Restarts"]) == ("FAILED", "0"), logs[case]
    assert "train.sbatch: error: unknown config key 'optim.lrr'; did you mean 'optim.lr'?" in logs["bad_config"]
    assert states["done"]["JobState"] == "COMPLETED" and "the run is finished, nothing to do" in logs["done"]
    assert not glob.glob(str(done_dir / "checkpoint_*.pt"))
