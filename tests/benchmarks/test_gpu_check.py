"""scripts/gpu_check.sh without a GPU: the no-CUDA error, the dry-run plan's commands, the driver's time
limits and exit codes on stand-in parts, and the report's arithmetic on fixture results."""
import argparse
import importlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import cli, gpu_check, gpu_report

REPO = Path(__file__).resolve().parents[2]
PARTS = ["tests", "race", "layers", "compile", "pipeline", "syncs", "trainer-32", "trainer-256"]


def gpu_check_sh(tmp_path, *args, **env):
    environ = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="", OUT=str(tmp_path / "out"), **env)
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), *args], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_without_cuda_one_line_and_exit_2(tmp_path):
    proc = gpu_check_sh(tmp_path)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout + proc.stderr
    assert "no CUDA device" in lines[0] and "--dry-run" in lines[0]
    assert not (tmp_path / "out").exists()


def plan_commands(text):
    """{part: argv} of the dry run's listing (background parts under their own names)."""
    commands, name = {}, None
    for line in text.splitlines():
        if line.startswith("["):
            name = line.split("]")[1].split()[0].rstrip(":")
        elif line.startswith("    $ "):
            commands[name] = shlex.split(line[6:])
    return commands


def check_python_command(argv):
    """The command's files exist and its options parse with the parser of the script or module it runs."""
    assert argv[0] == sys.executable
    if argv[1:3] == ["-m", "pytest"]:
        files = [a for a in argv[3:] if not a.startswith("-") and a != "no:cacheprovider"]
        assert files and all((REPO / f).is_file() for f in files), files
        return
    if argv[1] == "-m":
        module, rest = importlib.import_module(argv[2]), argv[3:]
    else:
        assert (REPO / argv[1]).is_file()
        module, rest = {"scripts/benchmark.py": cli}[argv[1]], argv[2:]
    module.parser().parse_args(rest)  # argparse exits on an unknown flag or a bad value


@pytest.mark.slow
def test_dry_run_lists_every_part_with_commands_that_parse(tmp_path):
    proc = gpu_check_sh(tmp_path, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    commands = plan_commands(proc.stdout)
    assert list(commands) == PARTS + ["prepare", "compile-cold-32", "compile-cold-256"]
    for name, argv in commands.items():
        if name == "race":  # compute-sanitizer's own flags, then the program it watches
            assert argv[1:3] == ["--tool", "racecheck"] and "--error-exitcode" in argv
            argv = argv[argv.index(sys.executable):]
        check_python_command(argv)
    assert "tests/engine/test_step_sync.py" in commands["tests"]
    assert any(f.startswith("tests/norms/test_triton") for f in commands["tests"])
    out = str(tmp_path / "out")
    assert all(a.startswith(out) for argv in commands.values() for a in argv if a.endswith(".json"))
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    assert gpu_check_sh(tmp_path, GPU_CHECK_DRY="1").stdout == proc.stdout


def test_bad_part_names_are_one_line_and_exit_2(tmp_path):
    proc = gpu_check_sh(tmp_path, "--dry-run", "--only", "tests,nonsense")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "nonsense" in proc.stderr


def stand_in(name, kind, budget, code):
    return gpu_check.Part(name, kind, budget, [sys.executable, "-c", code], f"stand-in {name}")


def test_time_limits_skips_and_exit_code(tmp_path, monkeypatch):
    """A failing correctness part makes the exit code 1; a part past its limit is stopped; a part that would
    get less than the minimum is skipped; the table still comes, with all of them."""
    monkeypatch.setattr(gpu_check, "RESERVE_S", 0)
    monkeypatch.setattr(gpu_check, "MIN_PART_S", 3)
    parts = [stand_in("tests", "correctness", 30, "import sys; print('1 failed'); sys.exit(1)"),
             stand_in("layers", "benchmark", 2, "import time; time.sleep(60)"),
             stand_in("compile", "benchmark", 30, "print('never')")]
    parts[2].json = str(tmp_path / "compile.json")
    background = [stand_in("prepare", "background", 0, "pass"),
                  stand_in("compile-cold-32", "background", 0, "import time; time.sleep(60)")]
    args = argparse.Namespace(total=5, cache_dir=str(tmp_path / "cache"))
    code = gpu_check.execute(parts, background, args, str(tmp_path), {"gpu": "stand-in"})
    records = json.loads((tmp_path / "parts.json").read_text())["parts"]
    # the background jobs end when the first benchmark starts: the data job waited for, the other stopped
    assert [(r["name"], r["status"]) for r in records] == [
        ("tests", "failed"), ("prepare", "passed"), ("compile-cold-32", "stopped"), ("layers", "timeout"),
        ("compile", "skipped")]
    assert 2 <= records[3]["seconds"] < 5 and "no time left" in records[4]["reason"]
    assert code == 1
    report = (tmp_path / "report.md").read_text()
    assert report.rstrip().endswith("exit code 1") and "FAILED** (tests)" in report


# ----- the report on fixture results ---------------------------------------------------------------------
JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.norms.test_triton_sn" name="test_a[x]" time="0.1"/>
<testcase classname="tests.norms.test_triton_sn" name="test_b" time="0.1"><failure message="assert 1 == 2">
</failure></testcase>
<testcase classname="tests.norms.test_triton_gn.TestGroup" name="test_c" time="0.1"/>
<testcase classname="tests.engine.test_step_sync" name="test_d" time="0.1"><skipped message="needs CUDA"/>
</testcase></testsuite></testsuites>"""


def write(path, data):
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


def fixture_records(tmp_path):
    checks = [{"layer": "SwitchNorm2d", "backend": "triton", "device": "cuda", "dtype": "bfloat16",
               "layout": "channels_last", "error": "y differs by 0.5", "seconds": 0.1},
              {"layer": "GroupNorm2d", "backend": "triton", "device": "cuda", "dtype": "float32", "layout": "nchw",
               "error": None, "seconds": 0.1}]
    layers = {"environment": {"git_commit": "abc1234", "triton": "3.5.0", "date": "2026-12-01T21:00:00+00:00"},
              "kernel_self_checks": checks,
              "layers": {"variants": ["bn", "sn-fused", "gn-fused"], "runs": [{
        "shapes": [{"shape": [32, 64, 56, 56], "errors": {"gn-fused": "RuntimeError: no kernel"}},
                   {"shape": [32, 256, 56, 56], "errors": {"gn-fused": "RuntimeError: a second one"}}],
        "batch": 32, "precision": "bf16", "layout": "channels_last", "total_s": {"bn": 0.004, "sn-fused": 0.005},
        "total_ratio_to_bn": {"sn-fused": 1.25}, "total_bandwidth_fraction": {"bn": 0.5, "sn-fused": 0.4},
        "max_ratio_to_bn": {"sn-fused": {"ratio": 1.5, "shape": [32, 64, 56, 56]}}}]}}

    def mode(median, ratio=None, memory=None, compile_s=None, breaks=None):
        rec = {"median_s": median, "images_per_s": 32 / median, "peak_memory_bytes": memory}
        if ratio is not None:
            rec["step_ratio_to_bn"] = ratio
        if compile_s is not None:
            rec.update(compile_s=compile_s, graph_breaks=breaks)
        return rec
    gib = 2**30
    compiled = {"compile": {"runs": [{"batch": 32, "variants": {
        "bn": {"eager": mode(0.020, memory=4 * gib), "compiled": mode(0.016, compile_s=40.0, breaks=0),
               "compiled_speedup": 1.25},
        "sn-fused": {"eager": mode(0.030, 1.5, 5 * gib), "compiled": mode(0.020, 1.25, compile_s=30.0, breaks=2),
                     "compiled_speedup": 1.5},
        "gn-fused": {"eager": mode(0.025, 1.25, 4 * gib), "compiled": {"error": "BackendCompilerFailed: x"}}}}]}}
    cold = {"compile": {"runs": [{"batch": 32, "variants": {"sn-fused": {"compiled": {"compile_s": 70.0}}}}]}}
    trainer = {"trainer": {"programs": {"trainer": {"images_per_s": 900.0}, "plain": {"images_per_s": 1000.0}}}}
    syncs = {"runs": [{"batch": 32, "steps_counted": 35, "total": 0, "per_step_mean": 0.0, "per_step_max": 0,
                       "messages": []}]}
    write(tmp_path / "tests.xml", JUNIT)
    (tmp_path / "tests.log").write_text("pytest output\n")
    race_log = write(tmp_path / "race.log", "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n"
                                            "========= ERROR SUMMARY: 0 errors\n")
    return [
        {"name": "tests", "kind": "correctness", "status": "failed", "returncode": 1, "seconds": 80.4,
         "limit_s": 150, "budget_s": 150, "log": str(tmp_path / "tests.log"), "json": None},
        {"name": "race", "kind": "correctness", "status": "passed", "returncode": 0, "seconds": 20, "limit_s": 60,
         "budget_s": 60, "log": race_log, "json": None},
        {"name": "layers", "kind": "benchmark", "status": "passed", "seconds": 30, "limit_s": 60, "budget_s": 60,
         "log": "", "json": write(tmp_path / "layers.json", layers)},
        {"name": "compile", "kind": "benchmark", "status": "timeout", "seconds": 170, "limit_s": 170,
         "budget_s": 170, "log": str(tmp_path / "compile.log"), "json": write(tmp_path / "compile.json", compiled)},
        {"name": "compile-cold-32", "kind": "background", "status": "stopped", "seconds": 100, "returncode": None,
         "log": "", "json": write(tmp_path / "compile-cold-32.json", cold)},
        {"name": "syncs", "kind": "benchmark", "status": "passed", "seconds": 12, "limit_s": 30, "budget_s": 30,
         "log": "", "json": write(tmp_path / "syncs.json", syncs)},
        {"name": "trainer-32", "kind": "benchmark", "status": "passed", "seconds": 40, "limit_s": 50,
         "budget_s": 50, "log": "", "json": write(tmp_path / "trainer-32.json", trainer)},
        {"name": "trainer-256", "kind": "benchmark", "status": "skipped", "reason": "no time left in the 480 s budget",
         "budget_s": 50, "json": str(tmp_path / "absent.json")},
    ]


def table_rows(markdown, title):
    """Rows (lists of cells) of the first table after the heading containing `title`."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#") and title in line)
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split(" | ")])
        elif rows:
            break
    return rows[2:]  # after the header and the separator


def test_report_figures_from_fixture_results(tmp_path):
    env = {"gpu": "NVIDIA H100", "gpu_memory_bytes": 80 * 2**30, "capability": "9.0", "torch": "2.11.0",
           "cuda_build": "12.8", "packages": {"pytest": True, "tensorboardX": False}}
    text, code = gpu_report.render(fixture_records(tmp_path), env, str(tmp_path), 400.2, 480)
    assert code == 1 and text.splitlines()[-1] == "**correctness: FAILED** (tests); exit code 1"
    assert text.splitlines()[0] == ("## GPU check: NVIDIA H100, 80 GiB (sm 9.0), torch 2.11.0 (CUDA 12.8); 400 s of "
                                    "the 480 s budget; commit abc1234, triton 3.5.0, 2026-12-01T21:00:00+00:00")
    assert "Not importable here: tensorboardX." in text
    assert table_rows(text, "Norm layers") == [["32 bf16 channels_last", "bn", "4.000", "1.00", "50%", "-"],
                                               ["32 bf16 channels_last", "sn-fused", "5.000", "1.25", "40%", "1.50"],
                                               ["32 bf16 channels_last", "gn-fused", "-", "-", "-", "-"]]
    assert "- N=32 bf16 channels_last, gn-fused at [32, 64, 56, 56]: RuntimeError: no kernel" in text
    fell_back = text.split("### Kernel self-checks that failed (the reference ran instead)")[1].split("###")[0]
    fell_back = fell_back.strip().splitlines()
    assert fell_back == ["- SwitchNorm2d triton cuda bfloat16 channels_last: y differs by 0.5"]
    assert "a second one" not in text  # the first error of a variant only
    # eager 30 ms / compiled 20 ms; memory 5 GiB against bn's 4; compile s: cold 70 (bn: no cold record) / 30
    assert table_rows(text, "ResNet-50 training step") == [
        ["32", "bn", "20.0", "16.0", "1.00", "1.00", "1.25", "- / 40", "0", "1600 / 2000", "4.00", "1.00"],
        ["32", "sn-fused", "30.0", "20.0", "1.50", "1.25", "1.50", "70 / 30", "2", "1067 / 1600", "5.00", "1.25"],
        ["32", "gn-fused", "25.0", "-", "1.25", "-", "-", "- / -", "?", "1280 / -", "4.00", "1.00"]]
    assert "- 32 per GPU, gn-fused compiled: BackendCompilerFailed: x" in text
    # 1000 / 900 - 1 = +11.1% more time per image in the trainer
    assert table_rows(text, "Trainer against a plain loop") == [["32", "900", "1000", "0.900", "+11.1%"]]
    assert table_rows(text, "Host synchronizations") == [["32", "35", "0", "0.00", "0", "-"]]
    assert table_rows(text, "Tests on CUDA by file") == [["tests/engine/test_step_sync.py", "0", "0", "1"],
                                                         ["tests/norms/test_triton_gn.py", "1", "0", "0"],
                                                         ["tests/norms/test_triton_sn.py", "1", "1", "0"]]
    assert "Failed: tests/norms/test_triton_sn.py::test_b" in text and "1 x needs CUDA" in text
    parts = {row[0]: row for row in table_rows(text, "Parts")}
    assert list(parts) == ["tests", "race", "layers", "compile", "compile-cold-32", "syncs", "trainer-32",
                           "trainer-256"]
    assert parts["tests"][2:] == ["failed", "80 / 150", "2 passed, 1 failed, 1 skipped"]
    assert parts["race"][4] == "0 errors, 0 hazards"
    assert parts["compile"][2] == "timeout" and "partial results kept" in parts["compile"][4]
    assert parts["trainer-256"][2:] == ["skipped", "- / 50", "no time left in the 480 s budget"]


def test_report_verdicts():
    passed = {"name": "tests", "status": "passed"}
    assert gpu_report.verdict([passed, {"name": "race", "status": "passed"}])[1] == 0
    line, code = gpu_report.verdict([passed, {"name": "race", "status": "skipped"}])
    assert code == 0 and "race did not run" in line
    assert gpu_report.verdict([passed, {"name": "race", "status": "timeout"}])[1] == 1
    assert gpu_report.verdict([{"name": "layers", "status": "failed"}, passed])[1] == 0  # benchmarks do not count


def test_pytest_verbose_lines_are_read_when_the_xml_is_missing():
    text = ("tests/norms/test_triton_sn.py::test_a[fmt0] PASSED                    [ 10%]\n"
            "tests/norms/test_triton_sn.py::test_b FAILED                          [ 20%]\n"
            "tests/engine/test_step_sync.py::test_c SKIPPED (needs CUDA)           [ 30%]\n")
    line, rows, failed, skips = gpu_report.test_summary(gpu_report.log_results(text))
    assert line == "1 passed, 1 failed, 1 skipped" and failed == ["tests/norms/test_triton_sn.py"]
    assert skips == {"needs CUDA": 1}


@pytest.mark.parametrize("text, expected", [
    ("========= RACECHECK SUMMARY: 3 hazards displayed (3 errors, 0 warnings)\n========= ERROR SUMMARY: 3 errors",
     "3 errors, 3 hazards"),
    ("========= ERROR SUMMARY: 0 errors", "0 errors"),
    ("Traceback ...", None)])
def test_sanitizer_summary(text, expected):
    assert gpu_report.sanitizer_summary(text) == expected


def test_budgets_from_the_environment(monkeypatch):
    parts = [stand_in("trainer-256", "benchmark", 50, "pass"), stand_in("layers", "benchmark", 45, "pass")]
    monkeypatch.setenv("GPU_CHECK_BUDGET_TRAINER_256", "90")
    assert [p.budget_s for p in gpu_check.budgets(parts)] == [90, 45]
    monkeypatch.setenv("GPU_CHECK_BUDGET_LAYERS", "ten")
    with pytest.raises(ValueError, match="GPU_CHECK_BUDGET_LAYERS='ten': give a whole number"):
        gpu_check.budgets(parts)


def test_report_falls_back_to_the_cold_runs(tmp_path):
    """The timed compile part stopped before a batch size was done: the cold runs' figures are shown, so labelled."""
    records = fixture_records(tmp_path)
    (tmp_path / "compile.json").write_text(json.dumps({"compile": {"runs": []}}))
    cold = {"compile": {"runs": [{"batch": 256, "variants": {"bn": {
        "eager": {"median_s": 0.1, "images_per_s": 2560.0, "peak_memory_bytes": None},
        "compiled": {"median_s": 0.08, "images_per_s": 3200.0, "compile_s": 50.0, "graph_breaks": 0}}}}]}}
    (tmp_path / "compile-cold-32.json").write_text(json.dumps(cold))
    text, _ = gpu_report.render(records, {}, str(tmp_path), 1, 480)
    assert table_rows(text, "cold runs only, 1 repeat") == [
        ["256", "bn", "100.0", "80.0", "1.00", "1.00", "-", "50 / 50", "0", "2560 / 3200", "-", "-"]]
