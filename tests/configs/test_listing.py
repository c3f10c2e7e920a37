"""train.py --list-configs and --list-norms: what ships and what each norm type accepts, without a --config."""
import importlib.util
import os

import pytest

from tests.engine.tiny import REPO

CONFIGS = os.path.join(REPO, "configs")


def train_main(argv, capsys):
    """(exit code, stdout lines, stderr) of train.py's main() in this process."""
    spec = importlib.util.spec_from_file_location("train_cli", os.path.join(REPO, "train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        code = module.main(argv)
    except SystemExit as e:  # argparse's errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_list_configs_has_one_line_per_yaml_with_its_setting_and_description(capsys):
    code, lines, _ = train_main(["--list-configs"], capsys)
    files = sorted(os.path.relpath(os.path.join(folder, name), REPO) for folder, _, names in os.walk(CONFIGS)
                   for name in names if name.endswith(".yaml"))
    assert code == 0 and [line.split()[0] for line in lines] == files
    by_path = {line.split()[0]: " ".join(line.split()[1:]) for line in lines}
    assert by_path["configs/imagenet/resnet50_v1_bn_8x32.yaml"] == \
        "bn (8, 32) ResNet-50 v1 + BN, setting (8, 32): 8 GPUs x 32 samples, total batch 256, lr 0.1."
    assert by_path["configs/zoo/resnet50_v1_sn_8x1.yaml"].startswith("sn (8, 1) Model-zoo recipe: ResNet-50 v1 + SN")
    assert by_path["configs/sweeps/paper_table.yaml"].startswith("sweep The SN paper's Table 1")


def test_list_norms_has_one_line_per_norm_type_with_its_options(capsys):
    code, lines, _ = train_main(["--list-norms"], capsys)
    assert code == 0
    by_type = dict(line.split(": ", 1) for line in lines)
    assert set(by_type) == {"bn", "syncbn", "gn", "sn", "syncsn", "in", "ln"}
    assert "groups=32" in by_type["gn"] and "groups" not in by_type["bn"]
    assert "using_bn=True" in by_type["sn"] and "using_moving_average=True" in by_type["syncsn"]
    assert "eps=1e-05" in by_type["ln"] and "stat_groups" not in " ".join(lines)


def test_without_config_or_listing_is_a_one_line_usage_error(capsys):
    code, lines, err = train_main([], capsys)
    assert code == 2 and lines == []
    assert err.strip().splitlines()[-1].endswith(
        ": error: the following arguments are required: --config (or --list-configs, --list-norms)")


@pytest.mark.parametrize("flag", ["--list-configs", "--list-norms"])
def test_listing_needs_no_config_and_trains_nothing(flag, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, lines, _ = train_main([flag], capsys)
    assert code == 0 and lines and os.listdir(tmp_path) == []
