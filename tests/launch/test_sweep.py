"""Sweep files: expansion into cells, run folder values, one-line errors, --only, process shapes, launch.sh's count."""
import os

import pytest

from configs import load_config
from launch import sweep as sw
from tests.launch.sweep_files import SWEEP, write_yaml


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
