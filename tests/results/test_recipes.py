"""A cell averages only replicates: runs whose config.yaml agree except for the seed and keys that do not change
the result; runs of other recipes get rows of their own, named by what differs."""
import csv
import io
import os

import pytest
import yaml

from results import aggregate, read_runs
from results.plots import accuracy_figure
from results.table import group_runs
from tests.results.fixtures import collect, parse_tables, write_run

HEADING = "ResNet-50 v1, 1000 classes, data data/imagenet"


def table_of(root):
    return parse_tables(collect([root, "--out", root]).stdout)[HEADING]


@pytest.mark.parametrize("key, base, other", [
    ("optim.lr", "0.1", "0.2"), ("train.epochs", "100", "90"), ("schedule.milestones", "[30, 60, 90]", "[30, 60, 80]"),
    ("data.pca_lighting", "0.0", "0.1"), ("norm.using_moving_average", "true", "false"),
])
def test_runs_of_another_recipe_are_not_averaged_into_the_cell(tmp_path, key, base, other):
    write_run(str(tmp_path), "sn_a", "sn", (8, 32), top1=76.8, top5=93.0)
    write_run(str(tmp_path), "sn_b", "sn", (8, 32), top1=76.6, top5=93.0, overrides=["train.seed=1"])
    write_run(str(tmp_path), "sn_c", "sn", (8, 32), top1=70.0, top5=90.0, overrides=[f"{key}={other}"])
    table = table_of(tmp_path)
    assert "SN" not in table
    assert table[f"SN ({key}={base})"]["(8,32)"] == "76.70 (n=2)"
    assert table[f"SN ({key}={other})"]["(8,32)"] == "70.00"


def test_seed_and_keys_that_do_not_change_the_result_still_average(tmp_path):
    ignored = [["train.seed=1", "log.print_every=10", "log.tensorboard=false", "checkpoint.keep_last=1",
                "checkpoint.every_iters=100", "data.workers=2", "train.max_iters=900000", "norm.impl=fused",
                "train.compile=true", "train.channels_last=true", "train.deterministic=true",
                "data.max_bad_images=5"], ["train.seed=2"], []]
    for i, overrides in enumerate(ignored):
        write_run(str(tmp_path), f"sn_{i}", "sn", (8, 32), top1=76.0 + i, top5=93.0, overrides=overrides)
    write_run(str(tmp_path), "sn_8x1", "sn", (8, 1), top1=75.0, top5=92.0, using_bn=False)  # the trainer's rule
    write_run(str(tmp_path), "gn", "gn", (8, 32), top1=75.5, top5=92.0, overrides=["norm.groups=16"])
    write_run(str(tmp_path), "bn", "bn", (8, 32), top1=76.5, top5=93.0)
    config = os.path.join(tmp_path, "sn_2", "config.yaml")   # written before norm.impl existed: its default
    with open(config) as f:
        cfg = yaml.safe_load(f)
    del cfg["norm"]["impl"]
    with open(config, "w") as f:
        yaml.safe_dump(cfg, f)
    table = table_of(tmp_path)
    assert list(table) == ["BN", "GN", "SN", "GN-BN", "SN-BN", "SN-GN"]
    assert (table["SN"]["(8,32)"], table["SN"]["(8,1)"]) == ("77.00 (n=3)", "75.00*")
    assert (table["SN-BN"]["(8,32)"], table["GN-BN"]["(8,32)"]) == ("+0.50", "-1.00")


def test_a_sweep_of_two_learning_rates(tmp_path):
    for norm, lr, setting, top1 in [("bn", 0.1, (8, 32), 76.0), ("bn", 0.2, (8, 32), 75.0), ("sn", 0.1, (8, 32), 77.0),
                                    ("sn", 0.2, (8, 32), 75.5), ("sn", 0.1, (8, 1), 74.0)]:
        write_run(str(tmp_path), f"{norm}_{lr}_{setting[1]}", norm, setting, top1=top1, top5=90.0,
                  using_bn=setting[1] > 1, overrides=[f"optim.lr={lr}"])
    table = table_of(tmp_path)
    assert list(table) == ["BN (optim.lr=0.1)", "BN (optim.lr=0.2)", "GN", "SN (optim.lr=0.1)", "SN (optim.lr=0.2)",
                           "GN-BN", "SN-BN (optim.lr=0.1)", "SN-BN (optim.lr=0.2)", "SN-GN"]
    assert table["SN (optim.lr=0.1)"]["(8,1)"] == "74.00*" and table["SN (optim.lr=0.2)"]["(8,1)"] == "not run"
    assert (table["SN-BN (optim.lr=0.1)"]["(8,32)"], table["SN-BN (optim.lr=0.2)"]["(8,32)"]) == ("+1.00", "+0.50")
    assert table["GN-BN"]["(8,32)"] == table["SN-GN"]["(8,32)"] == ""
    rows = {r["run"]: r for r in csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text()))}
    assert (rows["sn_0.2_32"]["row"], rows["sn_0.2_32"]["seed"]) == ("SN (optim.lr=0.2)", "0")
    assert rows["bn_0.1_32"]["row"] == "BN (optim.lr=0.1)"
    (key, members), = group_runs(read_runs(str(tmp_path))).items()
    ax = accuracy_figure([(key, aggregate(members, "top1"))], "top1").axes[0]
    lines = {ln.get_label(): (ln.get_marker(), list(ln.get_ydata())) for ln in ax.get_lines()
             if ln.get_label().endswith(", 8 GPUs")}
    # one line per row; a normalizer's recipes share its colour and differ in the marker
    assert lines == {"BN (optim.lr=0.1), 8 GPUs": ("o", [76.0]), "BN (optim.lr=0.2), 8 GPUs": ("X", [75.0]),
                     "SN (optim.lr=0.1), 8 GPUs": ("o", [74.0, 77.0]), "SN (optim.lr=0.2), 8 GPUs": ("X", [75.5])}


def test_differences_pair_rows_of_one_recipe_only(tmp_path):
    write_run(str(tmp_path), "bn", "bn", (8, 32), top1=76.0, top5=93.0)
    write_run(str(tmp_path), "sn", "sn", (8, 32), top1=77.0, top5=93.0, overrides=["train.epochs=90"])
    table = table_of(tmp_path)
    assert table["BN (train.epochs=100)"]["(8,32)"] == "76.00" and table["SN (train.epochs=90)"]["(8,32)"] == "77.00"
    assert table["SN-BN"]["(8,32)"] == ""           # 90 against 100 epochs is no comparison of normalizers
