"""train.py --dry-run refuses what training would refuse, in one line with exit code 2, and resolve_setting's
world checks (Slurm's train.sbatch runs --dry-run before any node starts)."""
import pytest
import yaml

from configs import BatchConfig, load_config, to_dict
from engine.setting import resolve_setting
from tests.engine.tiny import run, write_config


@pytest.mark.parametrize("world", [0, -2, -8, 2.0, True, None])
def test_resolve_setting_refuses_a_world_that_is_no_positive_integer(world):
    with pytest.raises(ValueError, match=r"the number of processes must be a positive integer, got "):
        resolve_setting(BatchConfig(gpus=8, samples_per_gpu=4), 0.1, world)


@pytest.mark.parametrize("world", [3, 16, 5])
def test_resolve_setting_refuses_a_world_that_does_not_divide_the_gpus(world):
    with pytest.raises(ValueError, match=rf"needs 8 GPUs or a divisor of 8 processes, got {world}"):
        resolve_setting(BatchConfig(gpus=8, samples_per_gpu=4), 0.1, world)


def test_resolve_setting_refuses_what_the_schema_would_not_load():
    with pytest.raises(ValueError, match=r"batch.samples_per_gpu must be a positive integer, got 0"):
        resolve_setting(BatchConfig(gpus=8, samples_per_gpu=0), 0.1, 8)
    with pytest.raises(ValueError, match=r"optim.lr must be a finite number > 0, got inf"):
        resolve_setting(BatchConfig(gpus=8, samples_per_gpu=4), float("inf"), 8)


def one_line_error(proc):
    """The single stderr line of a refused train.py run (argparse's usage lines before it are allowed)."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    return proc.stderr.strip().splitlines()[-1]


@pytest.fixture
def config(tmp_path):
    return write_config(str(tmp_path), str(tmp_path / "no_data"))  # --dry-run reads no data


@pytest.mark.slow
@pytest.mark.parametrize("world", ["-2", "0", "two"])
def test_world_must_be_a_positive_integer(config, world):
    line = one_line_error(run("train.py", ["--config", config, "--dry-run", "--world", world], check=False))
    assert line == f"train.py: error: argument --world: must be a positive integer (processes), got '{world}'"


def test_empty_config_file_is_refused(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    proc = run("train.py", ["--config", empty, "--dry-run"], check=False)
    assert one_line_error(proc).startswith(f"error: {empty}: the config file is empty")
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("overrides,message", [
    (["norm.groups=4"], "error: norm option 'groups=4' does not apply to norm type 'sn'"),
    (["norm.type=gn", "norm.groups=3"], "error: cannot build norm layer 'bn1': GroupNorm with groups=3 needs"),
    (["optim.lr=.inf"], "error: 'optim.lr' must be a finite number, got inf"),
])
def test_dry_run_builds_the_norm_and_the_model(config, overrides, message):
    proc = run("train.py", ["--config", config, "--dry-run", *overrides], check=False)
    assert one_line_error(proc).startswith(message) and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_dry_run_builds_with_the_emulated_setting_and_keeps_its_output(config):
    proc = run("train.py", ["--config", config, "--dry-run", "--world", "2", "norm.type=gn", "norm.groups=2"])
    assert "setting (4, 2) on 2 process(es): total batch 8, 4 samples per process" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].startswith("run folder: ")


@pytest.mark.slow
def test_dry_run_prints_the_setting_then_its_notes_then_the_config_then_the_run_folder(config, tmp_path):
    proc = run("train.py", ["--config", config, "--dry-run", "batch.samples_per_gpu=1"])
    lines = proc.stdout.rstrip().splitlines()
    assert lines[0] == ("setting (4, 1) on 4 process(es): total batch 4, 1 samples per process, statistics over 1 "
                        "samples, lr 0.0078125")
    assert lines[1] == "one sample per GPU: SN drops its BN branch (using_bn=False), as the paper did"
    # what training saves as config.yaml: the config with the paper's rule for SN at one sample per GPU
    expected = to_dict(load_config(config, ["batch.samples_per_gpu=1", "norm.using_bn=false"]))
    assert yaml.safe_load("\n".join(lines[2:-1])) == expected
    assert lines[-1] == f"run folder: {tmp_path / 'runs' / 'run'}"
