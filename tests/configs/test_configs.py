"""Config loading: every shipped config builds its model; inheritance, overrides and error messages."""
import dataclasses
import pathlib

import pytest
import torch

import norms
from configs import ConfigError, load_config
from models import build_model

ROOT = pathlib.Path(__file__).resolve().parents[2] / "configs"
# sweeps expand to configs; robustness sweeps name trained runs (tests/launch/test_robustness_sweep.py)
SHIPPED = sorted(p for p in ROOT.rglob("*.yaml") if p.parent.name not in ("sweeps", "robustness"))


def test_configs_are_shipped():
    names = {p.name for p in SHIPPED}
    assert {"resnet50_v1_bn_8x32.yaml", "resnet50_v1_gn_8x32.yaml", "resnet50_v1_sn_8x32.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_loads_and_builds_its_model(path):
    cfg = load_config(path)
    model = build_model(cfg.model, norms.build_norm(**dataclasses.asdict(cfg.norm)))
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, cfg.model.num_classes)


@pytest.mark.parametrize("norm", ["bn", "gn", "sn"])
def test_paper_recipe(norm):
    cfg = load_config(ROOT / f"imagenet/resnet50_v1_{norm}_8x32.yaml")
    assert cfg.norm.type == norm
    assert (cfg.model.depth, cfg.model.variant, cfg.train.epochs) == (50, "v1", 100)
    assert (cfg.batch.gpus, cfg.batch.samples_per_gpu, cfg.batch.total) == (8, 32, 256)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.1, 0.9, 1e-4)
    assert (cfg.schedule.type, cfg.schedule.milestones, cfg.schedule.gamma) == ("step", [30, 60, 90], 0.1)


ZOO = {"resnet50_v1_sn_8x32_cosine": (50, "v1", 8, 32, 120, "cosine"),
       "resnet50_v2_sn_8x32_cosine": (50, "v2", 8, 32, 120, "cosine"),
       "resnet101_v1_sn_8x32_cosine": (101, "v1", 8, 32, 120, "cosine"),
       "resnet101_v2_sn_8x32_cosine": (101, "v2", 8, 32, 120, "cosine"),
       "resnet50_v1_sn_8x4": (50, "v1", 8, 4, 100, "step"),
       "resnet50_v1_sn_8x1": (50, "v1", 8, 1, 100, "step")}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_model_zoo_recipes(name):
    cfg = load_config(ROOT / "zoo" / f"{name}.yaml")
    depth, variant, g, b, epochs, schedule = ZOO[name]
    assert (cfg.model.depth, cfg.model.variant, cfg.batch.gpus, cfg.batch.samples_per_gpu) == (depth, variant, g, b)
    assert (cfg.train.epochs, cfg.schedule.type, cfg.norm.type) == (epochs, schedule, "sn")
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.model.dropout) == (0.1, 1e-4, 0.5)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_inheritance_and_overrides(tmp_path):
    write(tmp_path, "a.yaml",
          "model: {depth: 18, num_classes: 10}\nschedule: {milestones: [1, 2]}\ntrain: {epochs: 3}\n")
    write(tmp_path, "b.yaml", "base: a.yaml\nmodel: {variant: v2}\n")
    child = write(tmp_path, "c.yaml", "base: b.yaml\nmodel: {depth: 34}\nschedule: {milestones: [2]}\n")
    cfg = load_config(child, ["optim.lr=0.2", "norm.type=sn", "norm.momentum=1e-2", "log.name=x=y"])
    assert (cfg.model.depth, cfg.model.variant, cfg.model.num_classes) == (34, "v2", 10)
    assert cfg.schedule.milestones == [2]  # lists are replaced, not merged
    assert (cfg.optim.lr, cfg.norm.type, cfg.norm.momentum, cfg.log.name) == (0.2, "sn", 0.01, "x=y")


@pytest.mark.parametrize("override,message", [
    ("optim.lrr=0.1", "unknown config key 'optim.lrr'; did you mean 'optim.lr'?"),
    ("modle.depth=18", "unknown config key 'modle'; did you mean 'model'?"),
    ("norm.tpye=gn", "unknown config key 'norm.tpye'; did you mean 'norm.type'?"),
    ("train.epochs=ten", "'train.epochs' must be int, got str 'ten'"),
    ("model.dropout=yes", "'model.dropout' must be float, got bool True"),
    ("schedule.milestones=5", "'schedule.milestones' must be a list of int, got 5"),
    ("norm.type=sm",
     "'norm.type' must be one of 'bn', 'syncbn', 'gn', 'sn', 'syncsn', 'in', 'ln', got 'sm' (did you mean 'sn'?)"),
    ("optim.lr=-0.1", "'optim.lr' must be > 0, got -0.1"),
    ("batch.samples_per_gpu=0", "'batch.samples_per_gpu' must be > 0, got 0"),
    ("norm.momentum=1.5", "'norm.momentum' must be <= 1, got 1.5"),
    ("schedule.milestones=[30,200]", "'schedule.milestones' must lie in 1..train.epochs=100"),
    ("model=5", "'model' must be a section"),
    ("optim.lr", "must look like section.key=value"),
    ("optim.lr.x=1", "'optim.lr' is not a section"),
])
def test_error_messages(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "imagenet/resnet50_v1_sn_8x32.yaml", [override])
    assert message in str(err.value)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    loop = write(tmp_path, "loop.yaml", "base: loop.yaml\n")
    with pytest.raises(ConfigError, match="inheritance cycle"):
        load_config(loop)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "bad.yaml", "model: [\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, "list.yaml", "- 1\n"))


def test_paper_table_sweep_covers_every_cell_with_the_paper_recipe(tmp_path):
    from engine.setting import effective_setting
    from launch.sweep import expand, load_cell_config, load_sweep
    cells = expand(load_sweep(str(ROOT / "sweeps" / "paper_table.yaml")), str(tmp_path))
    settings = [(8, 32), (8, 16), (8, 8), (8, 4), (8, 2), (1, 16), (1, 32), (8, 1), (1, 8)]
    want = {f"resnet50_v1_{n}_{g}x{b}": (n, g, b) for n in ("bn", "gn", "sn") for g, b in settings}
    assert sorted(c.run_name for c in cells) == sorted(want)
    for cell in cells:
        norm, g, b = want[cell.run_name]
        cfg, setting, _ = effective_setting(load_cell_config(cell))
        assert (cfg.norm.type, cfg.batch.gpus, cfg.batch.samples_per_gpu) == (norm, g, b)
        assert (cfg.model.depth, cfg.model.variant, cfg.train.epochs, cfg.schedule.milestones) \
            == (50, "v1", 100, [30, 60, 90])
        assert setting.lr == pytest.approx(0.1 * g * b / 256) and setting.world == g
        assert cfg.norm.using_bn == (not (norm == "sn" and b == 1))  # the paper's SN (8, 1) is IN + LN
        assert cfg.log.name == cell.run_name and cfg.log.out_dir == str(tmp_path)


def test_mini_sweep_holds_the_total_batch_and_varies_the_statistics_batch(tmp_path):
    from launch.sweep import expand, load_cell_config, load_sweep
    cells = expand(load_sweep(str(ROOT / "sweeps" / "fashion_mnist_mini.yaml")), str(tmp_path))
    configs = [load_cell_config(c) for c in cells]
    assert len(cells) == 12 and {c.batch.total for c in configs} == {32}
    assert {c.batch.samples_per_gpu for c in configs} == {32, 8, 2, 1}
    assert {c.norm.type for c in configs} == {"bn", "gn", "sn"}
