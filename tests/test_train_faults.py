"""train.py under faults, as real processes: changed experiments, Ctrl-C, two runs in one folder, a killed
torchrun agent, signals at shutdown, SIGKILL and the logs, bit flips, a full disk, a wrong checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.engine.tiny import REPO, final_state, read_until, run, start, write_config
from tests.faults import flip_tensor_byte, read_events, small_disk


def _one_error_line(proc):
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.slow
def test_resume_refuses_a_changed_experiment_and_reports_a_changed_schedule(tmp_path, dataset):
    import shutil
    cfg = write_config(str(tmp_path), dataset)
    run("train.py", ["--config", cfg, "train.max_iters=2"])
    copy = shutil.copytree(dataset, tmp_path / "copy")
    for change, shown in (("batch.samples_per_gpu=4", "batch.samples_per_gpu (2 -> 4)"), ("norm.type=bn", "norm.type"),
                          (f"data.root={copy}", "data.root"), ("optim.lr=0.1", "optim.lr (0.5 -> 0.1)")):
        line = _one_error_line(run("train.py", ["--config", cfg, change], check=False))
        assert "cannot resume" in line and shown in line and "log.name=" in line
    later = run("train.py", ["--config", cfg, "train.epochs=3", "train.max_iters=4"])
    assert "warning: resuming with a changed config: train.epochs, train.max_iters" in later.stdout
    assert "resumed from" in later.stdout


@pytest.mark.slow
def test_resume_from_weights_that_are_no_training_checkpoint(tmp_path, dataset):
    import torchvision
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    cfg = write_config(str(tmp_path), dataset)
    line = _one_error_line(run("train.py", ["--config", cfg, f"checkpoint.resume={weights}"], check=False))
    assert "is not a training checkpoint of this repository" in line and "eval.py" in line


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_exits_130_without_a_traceback(tmp_path, dataset):
    cfg = write_config(str(tmp_path), dataset, epochs=3)
    proc = start(["--config", cfg])
    lines = read_until(proc, " iter 1 ")
    proc.send_signal(signal.SIGINT)
    out = "".join(lines + proc.stdout.readlines())
    assert proc.wait(timeout=120) == 130, out
    assert "stopping on signal SIGINT: checkpoint written at iteration" in out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    step = final_state(tmp_path / "runs" / "run")[1]["global_step"]
    assert 1 <= step < 18 and not (tmp_path / "runs" / "run" / "final.json").exists()


@pytest.mark.multiprocess
def test_ctrl_c_under_torchrun_checkpoints_on_every_rank(tmp_path, dataset):
    """torchrun forwards SIGINT to its workers; its own exit code and message are torchrun's."""
    cfg = write_config(str(tmp_path), dataset, epochs=3)
    proc = start(["--config", cfg], nproc=2)
    lines = read_until(proc, " iter 1 ")
    proc.send_signal(signal.SIGINT)
    out = "".join(lines + proc.stdout.readlines())
    proc.wait(timeout=120)
    assert "stopping on signal SIGINT: checkpoint written at iteration" in out
    assert "KeyboardInterrupt" not in out
    assert 1 <= final_state(tmp_path / "runs" / "run")[1]["global_step"] < 18


def test_second_ctrl_c_aborts_at_once():
    from engine.stop import StopWatch
    watch = StopWatch()
    watch.on_signal(signal.SIGINT)
    assert watch.requested() and watch.exit_code == 130
    with pytest.raises(KeyboardInterrupt):
        watch.on_signal(signal.SIGINT)
    term = StopWatch()
    term.on_signal(signal.SIGTERM)
    term.on_signal(signal.SIGINT)  # a Ctrl-C after SIGTERM is the first Ctrl-C: still a clean stop
    assert term.reason == "SIGTERM" and term.exit_code == 143


@pytest.mark.slow
def test_two_runs_in_one_folder(tmp_path, dataset):
    cfg = write_config(str(tmp_path), dataset, epochs=5000)  # still running when the second one starts
    first = start(["--config", cfg])
    try:
        read_until(first, " iter 1 ")
        second = run("train.py", ["--config", cfg], check=False)
        line = _one_error_line(second)
        assert f"in use by another run (pid {first.pid} on " in line
        metrics = (tmp_path / "runs" / "run" / "metrics.jsonl").read_text()
    finally:
        first.kill()
        first.wait()
    assert "resumed" not in second.stdout and metrics  # the second run touched nothing
    assert first.returncode == -signal.SIGKILL
    third = run("train.py", ["--config", cfg, "train.max_iters=2"])
    assert f"took over the lock of {tmp_path / 'runs' / 'run' / '.lock'} left by a run that is no longer running " \
           f"(pid {first.pid} on " in third.stdout


def _children(pid):
    """Pids whose parent is `pid` (from /proc)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return out


@pytest.mark.multiprocess
def test_workers_stop_with_a_checkpoint_when_the_torchrun_agent_is_killed(tmp_path, dataset):
    cfg = write_config(str(tmp_path), dataset, epochs=30)
    agent = start(["--config", cfg], nproc=2, start_new_session=True)
    lines = read_until(agent, " iter 1 ")
    workers = _children(agent.pid)
    assert len(workers) == 2, lines
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait()
    out = "".join(lines + agent.stdout.readlines())  # the workers hold the pipe until they exit
    deadline = time.time() + 60
    while any(os.path.exists(f"/proc/{w}") and open(f"/proc/{w}/stat").read().split()[2] != "Z" for w in workers):
        assert time.time() < deadline, "workers still running a minute after their agent died"
        time.sleep(0.2)
    assert "stopping on torchrun agent died: checkpoint written at iteration" in out, out
    step = final_state(tmp_path / "runs" / "run")[1]["global_step"]
    assert 1 <= step < 30 * 6
    resumed = run("train.py", ["--config", cfg, "train.epochs=30", f"train.max_iters={step + 1}"], nproc=2)
    assert f"resumed from {tmp_path / 'runs' / 'run'}" in resumed.stdout


@pytest.mark.slow
def test_stop_signals_are_ignored_once_a_run_has_finished(tmp_path, dataset):
    cfg = write_config(str(tmp_path), dataset, epochs=1)
    code = ("import signal, sys, train; code = train.main(sys.argv[1:]); "
            "print([signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)]); "
            "signal.raise_signal(signal.SIGTERM); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code, "--config", cfg], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[True, True, True]"
    assert json.loads((tmp_path / "runs" / "run" / "final.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_logs_hold_each_step_once_after_kills_and_resumes(tmp_path, dataset):
    """SIGKILL at a few points of a run (between checkpoints), then resume: every log row once, in order."""
    cfg = write_config(str(tmp_path), dataset, epochs=4)
    overrides = ["checkpoint.every_iters=4", "checkpoint.keep_last=2"]
    for kill_after in (7, 13):
        proc = start(["--config", cfg, *overrides])
        read_until(proc, f" iter {kill_after} ")
        proc.kill()
        proc.wait()
    run("train.py", ["--config", cfg, *overrides])
    run_dir = tmp_path / "runs" / "run"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in rows if r["kind"] == "train"]
    assert train_steps == list(range(1, 25))
    assert [r["step"] for r in rows if r["kind"] == "val"] == [6, 12, 18, 24]
    keys = [(r["kind"], r["step"]) for r in rows]
    assert len(keys) == len(set(keys))
    events = read_events(*sorted((run_dir / "tb").iterdir()))
    assert sorted(s for tag, s in events if tag == "train/loss") == list(range(1, 25))
    assert len(events) == len(set(events))


@pytest.mark.slow
def test_bit_flipped_checkpoint_is_skipped_once_by_resume_and_refused_by_eval(tmp_path, dataset):
    cfg = write_config(str(tmp_path), dataset)
    run("train.py", ["--config", cfg, "train.max_iters=3", "checkpoint.every_iters=1"])
    run_dir = tmp_path / "runs" / "run"
    newest = run_dir / "checkpoint_000000003.pt"
    flip_tensor_byte(newest, mask=0x01)
    evaluated = run("eval.py", [newest, "--data", dataset], check=False)
    assert "checksum mismatch" in _one_error_line(evaluated)
    resumed = run("train.py", ["--config", cfg, "train.max_iters=4"])
    out = resumed.stdout + resumed.stderr
    assert out.count("checksum mismatch") == 1 and "skipping unreadable checkpoint" in out
    assert f"resumed from {run_dir / 'checkpoint_000000002.pt'}" in resumed.stdout


@pytest.mark.slow
def test_full_disk_during_a_checkpoint_write_and_a_read_only_folder(tmp_path, dataset):
    cfg = write_config(str(tmp_path), dataset, epochs=30)
    with small_disk(tmp_path / "disk", "1500k") as disk:
        overrides = [f"log.out_dir={disk}", "checkpoint.every_iters=1", "checkpoint.keep_last=100",
                     "log.tensorboard=false"]
        full = run("train.py", ["--config", cfg, *overrides], check=False)
        line = _one_error_line(full)
        assert "no space left on device writing" in line and "the last good checkpoint" in line
        last_good = line.rsplit("the last good checkpoint ", 1)[1].split(" is intact")[0]
        step = int(last_good[-12:-3])
        assert step >= 1 and torch.load(last_good, weights_only=True)["global_step"] == step
        again = run("train.py", ["--config", cfg, *overrides], check=False)  # still full: the same clear line
        assert "no space left on device" in _one_error_line(again)
        for name in sorted(n for n in os.listdir(disk / "run") if n.startswith("checkpoint_"))[:-1]:
            os.remove(disk / "run" / name)  # space freed: all but the newest checkpoint go
        finished = run("train.py", ["--config", cfg, *overrides, "checkpoint.keep_last=1",
                                    f"train.max_iters={step + 2}"])
        assert f"resumed from {last_good}" in finished.stdout
    with small_disk(tmp_path / "ro", "64k", readonly=True) as readonly:
        line = _one_error_line(run("train.py", ["--config", cfg, f"log.out_dir={readonly}"], check=False))
        assert "Read-only file system; choose a writable log.out_dir" in line
