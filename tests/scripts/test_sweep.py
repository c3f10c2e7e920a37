"""Sweep files: expansion, shapes, errors, the sweep.py CLI (dry run, local mode) and scripts/launch.sh."""
import json
import os
import subprocess
import sys

import pytest

from configs import load_config
from launch import slurm, sweep as sw
from tests.engine.tiny import REPO
from tests.scripts.tiny_sweep import TRAIN_IMAGES, read_final, sweep_cli, write_sweep


def write_yaml(tmp_path, text, configs=("cfg_bn.yaml", "cfg_gn.yaml")):
    for name in configs:
        (tmp_path / name).write_text("model: {depth: 18}\n")
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return str(path)


SWEEP = """\
name: table
config: cfg_{norm}.yaml
run_name: r50_{norm}_{setting}
axes:
  norm: [bn, gn]
  setting: [8x32, 1x16]
overrides: [optim.lr=0.2, "data.root=/data/{norm}"]
"""


def test_expand_gives_the_product_first_axis_outermost(tmp_path):
    path = write_yaml(tmp_path, SWEEP)
    cells = sw.expand(sw.load_sweep(path), str(tmp_path / "out"), ["train.seed=3"])
    out = str(tmp_path / "out")
    expected = []
    for norm in ("bn", "gn"):
        for g, b in ((8, 32), (1, 16)):
            name = f"r50_{norm}_{g}x{b}"
            expected.append((name, str(tmp_path / f"cfg_{norm}.yaml"),
                             ("optim.lr=0.2", f"data.root=/data/{norm}", "train.seed=3", f"batch.gpus={g}",
                              f"batch.samples_per_gpu={b}", f"log.out_dir={out}", f"log.name={name}"),
                             os.path.join(out, name)))
    assert [(c.run_name, c.config, c.overrides, c.run_dir) for c in cells] == expected
    cfg = load_config(cells[1].config, cells[1].overrides)  # the loader reads the overrides back
    assert (cfg.batch.gpus, cfg.batch.samples_per_gpu, cfg.data.root, cfg.log.name) \
        == (1, 16, "/data/bn", "r50_bn_1x16")


def test_run_folder_values_survive_yaml_parsing(tmp_path):
    """Folder names YAML would read as numbers or mappings still reach the trainer as the same strings."""
    path = write_yaml(tmp_path, "config: cfg_bn.yaml\nrun_name: '{n}'\naxes: {n: ['123', '1e3']}\n")
    out = str(tmp_path / "a: b #c")
    for cell in sw.expand(sw.load_sweep(path), out):
        cfg = load_config(cell.config, cell.overrides)
        assert (cfg.log.out_dir, cfg.log.name) == (out, cell.values["n"])


@pytest.mark.parametrize("text, extra, message", [
    (SWEEP + "epochs: 3\n", (), "unknown key 'epochs'"),
    (SWEEP.replace("r50_{norm}", "r50_{nrom}"), (), "placeholder {nrom} in run_name names no axis"),
    (SWEEP.replace("optim.lr=0.2", "'optim.lr={lr}'"), (), "placeholder {lr} in overrides[0] names no axis"),
    (SWEEP.replace("8x32", "8by32"), (), "setting '8by32' is not GxB"),
    (SWEEP.replace("1x16", "'1x0'"), (), "setting '1x0' is not GxB"),
    (SWEEP.replace("1x16", "0x16"), (), "setting 22 is not GxB with positive G and B (e.g. 8x32 = 8 GPUs x 32 samples) "
                                        "(YAML read it as a number: quote it)"),
    (SWEEP.replace("[8x32, 1x16]", "[8, 16]"), (), "setting 8 is not GxB"),
    (SWEEP.replace("cfg_{norm}", "cfgs/{norm}"), (), "config file not found"),
    (SWEEP.replace("_{setting}", ""), (), "gives 'r50_bn' for both"),
    (SWEEP.replace("r50_", "a/"), (), "must be a plain folder name"),
    (SWEEP.replace("[bn, gn]", "[]"), (), "axis 'norm' must be a non-empty list"),
    (SWEEP.replace("optim.lr=0.2", "log.name=x"), (), "sets log.name, which the sweep decides per cell"),
    (SWEEP, ("batch.gpus=4",), "sets batch.gpus, which the sweep decides per cell (the 'setting' axis sets it)"),
    (SWEEP, ("log.out_dir=/x",), "use --out"),
    ("- a\n- b\n", (), "a sweep file must be a mapping"),
    ("config: cfg_bn.yaml\n", (), "'run_name' must be a non-empty string"),
])
def test_bad_sweeps_are_one_line_errors(tmp_path, text, extra, message):
    path = write_yaml(tmp_path, text)
    with pytest.raises(sw.SweepError) as info:
        sw.expand(sw.load_sweep(path), str(tmp_path / "out"), extra)
    assert message in str(info.value) and "\n" not in str(info.value)


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


def test_only_selects_by_glob(tmp_path):
    cells = sw.expand(sw.load_sweep(write_yaml(tmp_path, SWEEP)), str(tmp_path))
    assert [c.run_name for c in sw.select(cells, ["*_1x16", "r50_gn_8*"])] == ["r50_bn_1x16", "r50_gn_8x32",
                                                                                "r50_gn_1x16"]
    with pytest.raises(sw.SweepError, match="matches none of the 4 run names"):
        sw.select(cells, ["r18_*"])


# (gpus of the setting, GPUs per node, --nodes, --procs-per-node) -> (nodes, processes per node)
@pytest.mark.parametrize("args, shape", [
    ((8, 8, None, None), (1, 8)),
    ((1, 8, None, None), (1, 1)),
    ((4, 8, None, None), (1, 4)),
    ((16, 8, None, None), (2, 8)),
    ((32, 4, None, None), (8, 4)),
    ((8, 8, None, 2), (1, 2)),       # each of 2 processes emulates 4 GPUs
    ((16, 8, 2, None), (2, 8)),
    ((16, 8, 2, 4), (2, 4)),
    ((8, 0, None, None), (1, 1)),    # CPU-only cluster: one process emulates all 8
    ((8, 0, None, 2), (1, 2)),
    ((8, 0, 2, 2), (2, 2)),
])
def test_shape_derivation(args, shape):
    got = sw.derive_shape(*args)
    assert (got.nodes, got.procs_per_node) == shape and got.world * (args[0] // got.world) == args[0]


@pytest.mark.parametrize("args, message", [
    ((12, 8, None, None), "a 12-GPU setting does not fill nodes of 8 GPUs"),
    ((8, 8, None, 3), "the 3 processes must divide 8"),
    ((8, 8, 3, None), "must divide 8"),
    ((8, 4, None, 8), "--procs-per-node 8 exceeds the 4 GPUs per node"),
    ((8, 0, None, 3), "cannot run on 1 node(s) x 3 process(es)"),
    ((8, -1, None, None), "--gpus-per-node must be >= 0"),
])
def test_shape_errors(args, message):
    with pytest.raises(sw.SweepError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sw.derive_shape(*args)


@pytest.mark.parametrize("gpus, visible, nproc", [(8, 0, 1), (8, 1, 1), (8, 3, 2), (8, 6, 4), (8, 8, 8), (8, 16, 8),
                                                  (6, 4, 3), (1, 8, 1)])
def test_launch_nproc_is_the_largest_divisor_of_the_gpus_that_fits(tmp_path, gpus, visible, nproc):
    (tmp_path / "c.yaml").write_text(f"batch: {{gpus: {gpus}}}\n")
    assert sw.launch_nproc(str(tmp_path / "c.yaml"), [], visible_gpus=visible) == nproc


def test_cells_file_lines_hold_the_train_arguments(tmp_path):
    sweep = write_yaml(tmp_path, SWEEP.replace("optim.lr=0.2", "'schedule.milestones=[1, 2]'"))
    cells = sw.expand(sw.load_sweep(sweep), str(tmp_path / "o"))
    path = slurm.write_cells_file(str(tmp_path / "sub"), "table-1x8", cells)
    # two files in the same second under the same job name: distinct files, neither overwritten
    other = slurm.write_cells_file(str(tmp_path / "sub"), "table-1x8", cells[:1])
    assert other != path and sorted(os.listdir(tmp_path / "sub")) == sorted(map(os.path.basename, (path, other)))
    assert os.path.basename(path).startswith("table-1x8-") and path.endswith(".cells")
    assert len(open(other).read().splitlines()) == 1
    # read exactly as train.sbatch does: line (task + 1), split on tabs by bash's read -a
    script = 'IFS=$\'\\t\' read -r -a f <<<"$(sed -n "$(($1 + 1))p" "$2")"; printf "%s\\n" "${f[@]}"'
    for i, cell in enumerate(cells):
        out = subprocess.run(["bash", "-c", script, "-", str(i), path], capture_output=True, text=True, check=True)
        assert out.stdout.splitlines() == [cell.run_name, cell.config, *cell.overrides]
    tabbed = [sw.Cell("x", "c.yaml", ("a=1\t2",), "d")]
    with pytest.raises(sw.SweepError, match="holds a tab or newline"):
        slurm.write_cells_file(str(tmp_path / "sub"), "t", tabbed)


def test_queued_runs_come_from_the_registry_and_squeue(tmp_path):
    registry = str(tmp_path / "jobs.tsv")
    cells = [sw.Cell(n, "c", (), "d") for n in ("a", "b", "c")]
    slurm.record_jobs(registry, "41", cells[:2])
    slurm.record_jobs(registry, "57", cells[2:])
    assert slurm.queued_runs(registry, ["41_1", "57_0", "99_0"]) == {"b": "41_1", "c": "57_0"}
    assert slurm.parse_job_id("123;cluster\n") == "123"


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
