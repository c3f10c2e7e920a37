"""The run folder's lock (against a real second process) and the log repair on resume."""
import json
import os
import signal
import subprocess
import sys

import pytest

from engine.run_folder import RunFolderError, RunLock, truncate_events, truncate_jsonl
from tests.engine.tiny import REPO
from tests.faults import read_events


def _hold_lock(folder):
    """A separate process that takes the lock and waits; returns it once the lock is held."""
    code = ("import sys, time; from engine.run_folder import RunLock; RunLock(sys.argv[1]); "
            "print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_is_refused_naming_the_first_and_a_dead_ones_lock_is_taken_over(tmp_path):
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(RunFolderError) as caught:
            RunLock(str(tmp_path))
        assert f"in use by another run (pid {holder.pid} on " in str(caught.value)
        assert "log.name" in str(caught.value) and "\n" not in str(caught.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    notes = []
    lock = RunLock(str(tmp_path), notes.append)  # the killed holder's lock died with it
    assert len(notes) == 1 and f"pid {holder.pid}" in notes[0] and "no longer running" in notes[0]
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()
    notes.clear()
    RunLock(str(tmp_path), notes.append).release()  # a cleanly released lock leaves no holder to report
    assert notes == []


def test_jsonl_keeps_rows_up_to_the_step_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"kind": "train", "step": s} for s in range(1, 9)] + [{"kind": "val", "step": 6}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(text + '{"kind": "train", "st')
    assert truncate_jsonl(str(path), 6) == 3  # steps 7, 8 and the torn line
    assert [json.loads(line) for line in path.read_text().splitlines()] == [r for r in rows if r["step"] <= 6]
    assert truncate_jsonl(str(path), 6) == 0
    assert truncate_jsonl(str(tmp_path / "absent.jsonl"), 3) == 0


def _write_events(folder, steps):
    from tensorboardX import SummaryWriter
    writer = SummaryWriter(str(folder))
    for step in steps:
        writer.add_scalar("train/loss", 1.0 / step, step)
        writer.add_scalar("train/lr", 0.1, step)
    writer.close()
    (path,) = [os.path.join(folder, n) for n in os.listdir(folder)]
    return path


@pytest.mark.parametrize("cut", [0, 1, 7, 20], ids=["whole", "torn_crc", "torn_payload", "torn_header"])
def test_event_file_is_cut_before_later_steps_and_torn_records(tmp_path, cut):
    path = _write_events(tmp_path, range(1, 11))
    if cut:
        data = open(path, "rb").read()
        open(path, "wb").write(data[:len(data) - cut])
    truncate_events(path, 6)
    assert read_events(path) == [(tag, s) for s in range(1, 7) for tag in ("train/loss", "train/lr")]
    truncate_events(path, 3)
    assert read_events(path) == [(tag, s) for s in range(1, 4) for tag in ("train/loss", "train/lr")]


def test_lock_file_in_an_unwritable_place_gives_one_line():
    with pytest.raises(RunFolderError, match="cannot write the run folder /proc/no_such_run"):
        RunLock("/proc/no_such_run")
