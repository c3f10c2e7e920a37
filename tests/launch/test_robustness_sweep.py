"""Robustness sweep files: one-line errors, expansion into eval.py cells, --dry-run, resume, and one real run."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from launch import robustness as rb
from tests.engine.tiny import CLASSES, REPO, run, write_config

SWEEP = """\
name: tiny_robustness
runs: {runs}
models: {{bn: run_bn, gn: run_gn}}
corruptions: {root}
corruption_list: [fog]
severities: [1]
methods: [source, batch, tent]
adapt_batch: [4, 1]
adapt: {{tent_mode: episodic}}
eval: {{batch_size: 7, workers: 0}}
extra: [{{model: bn, method: batch, adapt_batch: 4, stream_seed: 1}}]
"""


def write_sweep(tmp_path, text=None, **fields):
    values = {"runs": str(tmp_path / "runs"), "root": str(tmp_path / "c")} | fields
    path = tmp_path / "sweep.yaml"
    path.write_text((SWEEP if text is None else text).format(**values))
    return str(path)


def load_driver():
    spec = importlib.util.spec_from_file_location("robustness_sweep_script",
                                                  os.path.join(REPO, "scripts", "robustness_sweep.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_expand_gives_models_by_methods_by_batches_then_extras(tmp_path):
    out = tmp_path / "out"
    sweep = rb.load_sweep(write_sweep(tmp_path))
    cells = rb.expand(sweep, str(out))
    expected = []
    for model in ("bn", "gn"):
        expected.append((f"{model}_source", model, "source", []))
        for method in ("batch", "tent"):
            for b in (4, 1):
                flags = ["--adapt-batch", str(b)] + (["--tent-mode", "episodic"] if method == "tent" else [])
                expected.append((f"{model}_{method}_B{b}", model, method, flags))
    expected.append(("bn_batch_B4_seed1", "bn", "batch", ["--adapt-batch", "4", "--stream-seed", "1"]))
    assert len(cells) == 2 * (1 + 2 * 2) + 1
    assert [c.name for c in cells] == [e[0] for e in expected]
    for cell, (_, model, method, flags) in zip(cells, expected):
        assert cell.run_dir == str(tmp_path / "runs" / f"run_{model}")
        args = rb.eval_args(sweep, cell, "CKPT")
        assert args == ["CKPT", "--corruptions", str(tmp_path / "c"), "--corruption-list", "fog", "--severities", "1",
                        "--adapt", method, *flags, "--batch-size", "7", "--workers", "0", "--json",
                        "--out", cell.record]
    assert cells[0].record == str(out / "bn_source.json")
    assert cells[-1].record == str(out / "stream_seed1" / "bn_batch_B4_seed1.json")
    assert cells[-1].repeats == "bn_batch_B4" and all(c.repeats is None for c in cells[:-1])


@pytest.mark.parametrize("old, new, message", [
    ("methods:", "metods:", "unknown key 'metods'; did you mean 'methods'?"),
    ("[source, batch, tent]", "[source, bacth]", "methods: unknown adaptation method 'bacth'"),
    ("[4, 1]", "[4, 300]", "adapt_batch: 'adapt_batch' must be <= 256, got 300"),
    ("[4, 1]", "[0]", "'adapt_batch' must be >= 1, got 0"),
    ("adapt_batch: [4, 1]\n", "", "need 'adapt_batch'"),
    ("tent_mode: episodic", "tent_mod: episodic", "unknown key 'adapt.tent_mod'; did you mean 'adapt.tent_mode'?"),
    ("tent_mode: episodic", "tent_mode: sometimes", "'tent_mode' must be one of"),
    ("stream_seed: 1", "prior_n: 4", "extra[0]: 'prior_n' applies to prior, not batch"),
    ("model: bn, method", "model: in, method", "extra[0].model must be one of the models (bn, gn)"),
    ("stream_seed: 1", "stream_seed: 0", "extra[0] repeats cell bn_batch_B4 (the grid)"),
    ("batch_size: 7", "batch_size: 0", "'eval.batch_size' must be an integer >= 1 or null, got 0"),
    ("name: tiny_robustness\n", "name: tiny_robustness\ncheckpoint: newest\n", "'checkpoint' must be best"),
    ("severities: [1]", "severities: [6]", "'severities' must be a list of integers from 1 to 5"),
    ("models: {{bn: run_bn, gn: run_gn}}", "models: [run_bn]", "'models' must map labels"),
])
def test_bad_sweeps_are_one_line_errors(tmp_path, old, new, message):
    assert old in SWEEP
    text = SWEEP.replace(old, new)
    with pytest.raises(rb.RobustnessError) as info:
        rb.expand(rb.load_sweep(write_sweep(tmp_path, text)), str(tmp_path / "out"))
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
def test_cli_refuses_a_bad_sweep_with_one_line_and_exit_code_2(tmp_path):
    path = write_sweep(tmp_path, SWEEP.replace("[4, 1]", "[4, 257]"))
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "robustness_sweep.py"), path,
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {path}: adapt_batch: 'adapt_batch' must be <= 256, got 257"]
    assert not (tmp_path / "out").exists()


def test_set_replaces_top_level_keys(tmp_path):
    sweep = rb.load_sweep(write_sweep(tmp_path), ["corruptions=/elsewhere", "severities=[2, 5]"])
    assert (sweep.corruptions, sweep.severities) == ("/elsewhere", (2, 5))
    with pytest.raises(rb.RobustnessError, match="--set severities: give KEY=VALUE"):
        rb.load_sweep(write_sweep(tmp_path), ["severities"])


def test_dry_run_prints_the_eval_commands_and_runs_nothing(tmp_path, capsys, monkeypatch):
    driver = load_driver()
    monkeypatch.setattr(driver.subprocess, "run", lambda *a, **k: pytest.fail("a dry run started a process"))
    out = tmp_path / "out"
    assert driver.main([write_sweep(tmp_path), "--out", str(out), "--dry-run", "--only", "gn_*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("robustness sweep tiny_robustness: 5 of 11 cells")
    runs = [line for line in lines if line.startswith("would run ")]
    assert [line.split(":")[0] for line in runs] == ["would run gn_source", "would run gn_batch_B4",
                                                    "would run gn_batch_B1", "would run gn_tent_B4",
                                                    "would run gn_tent_B1"]
    checkpoint = os.path.join(tmp_path, "runs", "run_gn", "best.pt")
    assert f"eval.py {checkpoint} --corruptions" in runs[3]
    assert runs[3].endswith(f"--adapt tent --adapt-batch 4 --tent-mode episodic --batch-size 7 --workers 0 --json "
                            f"--out {out / 'gn_tent_B4.json'}")
    assert not out.exists()


def test_finished_cells_are_skipped_and_a_failed_cell_does_not_stop_the_others(tmp_path, capsys, monkeypatch):
    driver = load_driver()
    for name in ("run_bn", "run_gn"):
        os.makedirs(tmp_path / "runs" / name)
        (tmp_path / "runs" / name / "best.pt").write_bytes(b"")
    out = tmp_path / "out"
    os.makedirs(out)
    (out / "bn_source.json").write_text(json.dumps({"kind": "robustness"}))
    started = []

    def fake_run(cmd, **kwargs):
        record = cmd[cmd.index("--out") + 1]
        started.append(os.path.basename(record))
        if "gn_source" in record:
            return subprocess.CompletedProcess(cmd, 3)
        with open(record, "w") as f:
            json.dump({"kind": "robustness", "summary": {"mean_error": 12.5}}, f)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(driver.subprocess, "run", fake_run)
    assert driver.main([write_sweep(tmp_path), "--out", str(out), "--only", "*_source", "--only", "bn_batch_B4*"]) == 1
    captured = capsys.readouterr()
    assert started == ["bn_batch_B4.json", "gn_source.json", "bn_batch_B4_seed1.json"]  # the sweep's order
    assert f"skip bn_source: finished ({out / 'bn_source.json'})" in captured.out
    assert "bn_batch_B4: exit code 0 after 0 s, mean error 12.50%" in captured.out
    assert "stream seed: bn_batch_B4_seed1 mean error 12.50%; bn_batch_B4 mean error 12.50%" in captured.out
    assert captured.err.strip().splitlines()[-1] == "1 of 4 cells failed: gn_source (exit 3)"


def test_a_run_without_checkpoint_fails_its_cells_only(tmp_path, capsys):
    driver = load_driver()
    assert driver.main([write_sweep(tmp_path), "--out", str(tmp_path / "out"), "--only", "gn_source"]) == 1
    err = capsys.readouterr().err
    assert f"gn_source: failed: no best.pt in {tmp_path / 'runs' / 'run_gn'}: train that run first" in err


@pytest.mark.slow
def test_two_real_cells_write_records_and_a_rerun_skips_them(tmp_path, dataset):
    """A tiny BN model trained for one epoch, a fog/1 folder holding the val images, source and batch B=4."""
    run("train.py", ["--config", write_config(str(tmp_path), dataset, norm="bn", epochs=1)])
    for name in CLASSES:
        shutil.copytree(os.path.join(dataset, "val", name), tmp_path / "c" / "fog" / "1" / name)
    text = SWEEP.replace("{{bn: run_bn, gn: run_gn}}", "{{bn: run}}").replace("[source, batch, tent]",
                                                                              "[source, batch]")
    text = text.replace("[4, 1]", "[4]").replace("adapt: {{tent_mode: episodic}}\n", "").replace(
        "extra: [{{model: bn, method: batch, adapt_batch: 4, stream_seed: 1}}]\n", "")
    argv = [os.path.join(REPO, "scripts", "robustness_sweep.py"), write_sweep(tmp_path, text),
            "--out", str(tmp_path / "out")]
    first = run(argv[0], argv[1:])
    assert [line.split(":")[0] for line in first.stdout.splitlines() if ": exit code 0" in line] \
        == ["bn_source", "bn_batch_B4"]
    records = {}
    for name in ("bn_source", "bn_batch_B4"):
        with open(tmp_path / "out" / f"{name}.json") as f:
            records[name] = json.load(f)
    assert (records["bn_source"]["method"], records["bn_batch_B4"]["method"]) == ("source", "batch")
    assert records["bn_batch_B4"]["adapt_batch"] == 4 and records["bn_source"]["run"] == "run"
    for record in records.values():
        assert [(d["corruption"], d["severity"], d["images"]) for d in record["domains"]] == [("fog", 1, 20)]
    mtimes = [os.stat(tmp_path / "out" / f"{n}.json").st_mtime_ns for n in records]
    second = run(argv[0], argv[1:])
    assert [line for line in second.stdout.splitlines() if line.startswith("skip ")] == [
        f"skip {n}: finished ({tmp_path / 'out' / f'{n}.json'})" for n in records]
    assert "exit code" not in second.stdout
    assert mtimes == [os.stat(tmp_path / "out" / f"{n}.json").st_mtime_ns for n in records]
