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


# ----- the contract: config.yaml and final.json -------------------------------------------------
def test_final_json_carries_its_schema_and_reads_back(tmp_path):
    from engine import run_folder
    run_folder.write_final(str(tmp_path), {"status": "finished", "top1": 12.5})
    assert json.loads((tmp_path / "final.json").read_text()) == {"schema": 1, "status": "finished", "top1": 12.5}
    assert run_folder.read_final(str(tmp_path)) == {"schema": 1, "status": "finished", "top1": 12.5}
    assert run_folder.read_final(str(tmp_path / "absent")) is None


@pytest.mark.parametrize("record, status", [({"top1": 1.0}, "finished"), ({"status": "diverged"}, "diverged"),
                                            ({"error": "x"}, "unknown")])
def test_final_json_without_a_schema_is_schema_0_and_accepted(tmp_path, record, status):
    from engine import run_folder
    (tmp_path / "final.json").write_text(json.dumps(record))
    assert run_folder.final_status(run_folder.read_final(str(tmp_path))) == status


@pytest.mark.parametrize("schema", [2, -1, "1", None])
def test_final_json_of_an_unknown_schema_is_one_line_naming_it(tmp_path, schema):
    from engine import run_folder
    (tmp_path / "final.json").write_text(json.dumps({"schema": schema, "status": "finished"}))
    with pytest.raises(RunFolderError) as caught:
        run_folder.read_final(str(tmp_path))
    message = str(caught.value)
    assert f"final.json schema {schema!r} is not one this code reads (0 to 1)" in message and "\n" not in message


def test_the_collector_and_the_sweep_read_final_json_through_the_contract(tmp_path):
    from engine import run_folder
    from launch.sweep import Cell
    from results import ResultsError, read_run
    run_folder.write_config(str(tmp_path), {"batch": {"gpus": 1, "samples_per_gpu": 2}})
    (tmp_path / "final.json").write_text(json.dumps({"schema": 2, "status": "finished"}))
    with pytest.raises(ResultsError, match="schema 2 is not one this code reads"):
        read_run(str(tmp_path))
    cell = Cell("run", "cfg.yaml", (), str(tmp_path))
    assert cell.finished() and cell.final_status() == "unreadable"
    run_folder.write_final(str(tmp_path), {"status": "diverged"})
    assert read_run(str(tmp_path)).status == "diverged" and cell.final_status() == "diverged"


def test_config_yaml_reads_back_and_a_malformed_one_is_one_line(tmp_path):
    from engine import run_folder
    config = {"model": {"depth": 18}, "optim": {"lr": 0.1, "milestones": [30, 60]}}
    run_folder.write_config(str(tmp_path), config)
    assert run_folder.read_config(str(tmp_path)) == config
    (tmp_path / "config.yaml").write_text("model: [\n")
    with pytest.raises(RunFolderError, match=r"config.yaml: not valid YAML \(.*\); fix or remove the file$"):
        run_folder.read_config(str(tmp_path))


def test_checkpoint_names_sort_by_step_and_ignore_other_files(tmp_path):
    from engine import run_folder
    for step in (5, 120, 30):
        open(run_folder.checkpoint_path(str(tmp_path), step), "w").close()
    for other in ("checkpoint_12.pt", "best.pt", "checkpoint_000000007.pt.tmp"):
        (tmp_path / other).write_text("")
    found = run_folder.list_checkpoints(str(tmp_path))
    assert [os.path.basename(p) for p in found] == [f"checkpoint_{s:09d}.pt" for s in (120, 30, 5)]
    assert [run_folder.step_of(p) for p in found] == [120, 30, 5]


# ----- resuming without tensorboardX ------------------------------------------------------------
@pytest.fixture
def no_tensorboardx(monkeypatch):
    """Importing tensorboardX (or any of its modules) raises ImportError, as on a machine without it."""
    for name in [n for n in sys.modules if n == "tensorboardX" or n.startswith("tensorboardX.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)


@pytest.mark.parametrize("tensorboard", [False, True], ids=["logging_off", "logging_on"])
def test_a_resume_without_tensorboardx_skips_the_event_files(tmp_path, no_tensorboardx, tensorboard):
    from engine.logger import RunLogger
    events = tmp_path / "tb" / "events.out.tfevents.1.host"
    events.parent.mkdir()
    events.write_bytes(b"written by an earlier run")
    logger = RunLogger(str(tmp_path), True, tensorboard)
    note = logger.open(5)
    logger.scalars(6, {"loss": 1.0}, "train")
    logger.close()
    assert events.read_bytes() == b"written by an earlier run"
    assert (note is not None and "tensorboardX is not installed" in note) == tensorboard
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [6]
