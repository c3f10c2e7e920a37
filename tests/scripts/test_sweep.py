"""The sweep.py CLI (errors, dry run, Slurm mode without Slurm, local mode) and scripts/launch.sh."""
import json
import os
import subprocess
import sys

import pytest

from tests.engine.tiny import REPO
from tests.launch.sweep_files import SWEEP, write_yaml
from tests.scripts.tiny_sweep import TRAIN_IMAGES, read_final, sweep_cli, write_sweep


def test_cli_reports_errors_on_one_line_with_exit_code_2(tmp_path):
    path = write_yaml(tmp_path, SWEEP.replace("8x32", "8by32"))
    proc = sweep_cli([path, "--dry-run", "--local"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {path}: setting '8by32' is not GxB with positive G and B "
                                                "(e.g. 8x32 = 8 GPUs x 32 samples)"]
    proc = sweep_cli([path.replace("sweep.yaml", "nope.yaml"), "--local"])
    assert (proc.returncode, proc.stderr.strip()) == (2, f"error: sweep file not found: {tmp_path / 'nope.yaml'}")


def test_bad_override_in_one_cell_stops_before_anything_runs(tmp_path):
    path = write_yaml(tmp_path, SWEEP.replace("optim.lr=0.2", "optim.lrr=0.2"))
    proc = sweep_cli([path, "--local", "--out", tmp_path / "out"])
    assert proc.returncode == 2 and "cell r50_bn_8x32: unknown config key 'optim.lrr'; did you mean 'optim.lr'?" \
        in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_dry_run_prints_groups_commands_and_the_trainers_setting_line(tmp_path):
    for norm, workers in (("bn", 2), ("sn", 5)):
        (tmp_path / f"cfg_{norm}.yaml").write_text(f"norm: {{type: {norm}}}\noptim: {{lr: 0.1}}\n"
                                                   f"data: {{workers: {workers}}}\n")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("name: t\nconfig: cfg_{norm}.yaml\nrun_name: '{norm}_{setting}'\n"
                     "axes: {norm: [bn, sn], setting: [8x32, 16x2, 1x16]}\n")
    out = tmp_path / "runs"
    os.makedirs(out / "sn_1x16")
    (out / "sn_1x16" / "final.json").write_text(json.dumps({"status": "diverged"}))
    proc = sweep_cli([sweep, "--dry-run", "--slurm", "--out", out, "--gpus-per-node", "8", "--partition", "gpu",
                      "--sbatch-arg=--qos=high", "--python", sys.executable, "--", "train.epochs=100"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert f"skip sn_1x16: finished (diverged, {out / 'sn_1x16' / 'final.json'})" in lines
    submits = [l for l in lines if l.startswith("would submit")]
    # CPUs per process: the largest data.workers among the shape's cells + 1 (sn_1x16 is skipped: bn's 2 + 1)
    expected = {"1x8": (2, "--nodes=1", "--gpus-per-node=8", 8 * 6),
                "2x8": (2, "--nodes=2", "--gpus-per-node=8", 8 * 6),
                "1x1": (1, "--nodes=1", "--gpus-per-node=1", 3)}
    assert len(submits) == 3
    for line in submits:
        shape = line.split("--job-name=t-")[1].split()[0]
        count, nodes, gpus, cpus = expected[shape]
        assert f"would submit {count} cell(s)" in line and f" {nodes} " in line and f" {gpus} " in line
        assert f" --cpus-per-task={cpus} " in line and "--partition=gpu --qos=high" in line
        # explicit, for sites with SBATCH_EXPORT=NONE
        assert f" --chdir={REPO} --export=ALL,REPO={REPO},PYTHON={sys.executable},PROCS_PER_NODE={shape[2:]} " \
            in line
        assert line.endswith(f"--cells {out / '.sweep' / f't-{shape}-XXXXXXXX.cells'}")
    # the setting line is the one train.py --dry-run prints for the same cell and world size
    for run, world in (("bn_16x2", 16), ("sn_8x32", 8)):
        i = next(i for i, l in enumerate(lines) if l.strip().startswith("[") and f" {run}: train.py" in l)
        args = lines[i].split(": train.py ", 1)[1].split()
        train = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *args, "--dry-run", "--world",
                                str(world)], capture_output=True, text=True, cwd=REPO)
        setting = next(l for l in train.stdout.splitlines() if l.startswith("setting ("))
        assert lines[i + 1].strip() == setting
    assert not (out / ".sweep").exists()  # nothing written, nothing submitted


def test_slurm_mode_without_slurm_commands_is_a_one_line_error(tmp_path):
    sweep = write_yaml(tmp_path, SWEEP)
    (tmp_path / "bin").mkdir()  # a PATH without sbatch and squeue
    proc = sweep_cli([sweep, "--slurm", "--out", tmp_path / "out"], env={**os.environ, "PATH": str(tmp_path / "bin")})
    assert (proc.returncode, proc.stderr.strip()) == (2, "error: --slurm needs sbatch and squeue on PATH, which this "
                                                         "machine lacks; run the cells here with --local")
    assert not (tmp_path / "out").exists()
    proc = sweep_cli([sweep, "--local", "--wait", "--dry-run"])
    assert (proc.returncode, proc.stderr.strip()) == (2, "error: --wait applies to --slurm only; --local already runs "
                                                         "the cells one after another")


def test_launch_sh_rejects_bad_input_on_one_line(tmp_path):
    (tmp_path / "c.yaml").write_text("optim: {lrr: 0.1}\n")
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "launch.sh"), str(tmp_path / "c.yaml")],
                          capture_output=True, text=True)
    assert (proc.returncode, proc.stderr.strip()) \
        == (2, "error: unknown config key 'optim.lrr'; did you mean 'optim.lr'?")
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "launch.sh"), "--nproc", "0", "c.yaml"],
                          capture_output=True, text=True)
    assert (proc.returncode, proc.stderr.strip()) == (2, "error: --nproc must be a positive integer, got '0'")


@pytest.mark.multiprocess
def test_local_sweep_runs_cells_in_turn_through_launch_sh_and_skips_finished(tmp_path):
    """bn trains under torchrun (2 processes); gn's data folder is missing, so it fails and the sweep goes on;
    sn diverges (train.py exits 1 after writing final.json), which is a result, not a failure."""
    sweep = write_sweep(str(tmp_path), norms=("bn", "gn", "sn"))
    cfg_gn = tmp_path / "cfg_gn.yaml"
    cfg_gn.write_text(cfg_gn.read_text().replace(str(tmp_path / "data"), str(tmp_path / "missing")))
    cfg_sn = tmp_path / "cfg_sn.yaml"
    cfg_sn.write_text(cfg_sn.read_text().replace("lr: 0.5,", "lr: 1.0e+30,")
                      .replace("warmup_epochs: 0.5", "warmup_epochs: 0"))
    out = tmp_path / "runs"
    proc = sweep_cli([sweep, "--local", "--out", out, "--procs-per-node", "2"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    order = [l.split(":")[0] for l in lines if l.startswith(("run ", "tiny_"))]
    assert order == ["run tiny_bn_2x4", "tiny_bn_2x4", "run tiny_gn_2x4", "tiny_gn_2x4", "run tiny_sn_2x4",
                     "tiny_sn_2x4", "tiny_sn_2x4"], lines
    assert "tiny_bn_2x4: exit code 0" in proc.stdout and "tiny_sn_2x4: exit code 1 " in proc.stdout
    assert f"tiny_sn_2x4: done (diverged, {out / 'tiny_sn_2x4' / 'final.json'})" in lines
    assert proc.stderr.strip().splitlines()[-1].startswith("1 of 3 cells failed: tiny_gn_2x4 (exit ")
    assert read_final(out / "tiny_sn_2x4")["status"] == "diverged"
    final = read_final(out / "tiny_bn_2x4")
    # 2 processes for the (2, 4) setting: plain DDP, 4 samples each, total batch 8
    assert final["status"] == "finished" and final["iterations"] == TRAIN_IMAGES // 8
    assert {k: final["setting"][k] for k in ("gpus", "samples_per_gpu", "world", "stat_groups")} == \
        {"gpus": 2, "samples_per_gpu": 4, "world": 2, "stat_groups": 1}
    assert not (out / "tiny_gn_2x4" / "final.json").exists()

    again = sweep_cli([sweep, "--local", "--out", out, "--only", "*_bn_*"])
    assert again.returncode == 0, again.stderr
    assert f"skip tiny_bn_2x4: finished (finished, {out / 'tiny_bn_2x4' / 'final.json'})" in again.stdout
    assert "nothing to run" in again.stdout
