"""Table columns and figure lines of a sweep outside the paper's settings (the mini reproduction) and of the paper's."""
import csv
import io

import matplotlib
import pytest

from results import aggregate, read_runs
from results.plots import accuracy_figure
from results.table import group_runs
from tests.results.fixtures import (
    PAPER_COLUMNS,
    assert_png,
    collect,
    collect_in_process,
    columns_of,
    parse_tables,
    random_switch_weights,
    write_run,
)

matplotlib.use("Agg")

MINI = "ResNet-18 v1, width 16, small stem, 10 classes, data data/fashion_mnist_20k"
PAPER_MODEL = "ResNet-50 v1, 1000 classes, data data/imagenet"
# configs/sweeps/fashion_mnist_mini.yaml's grid (total batch 32) plus one BN run at a total batch of 64:
# (norm, (gpus, samples per GPU), status, top1)
MINI_RUNS = [
    ("bn", (1, 32), "finished", 91.20), ("bn", (4, 8), "finished", 90.80), ("bn", (16, 2), "finished", 89.00),
    ("bn", (32, 1), "diverged", None), ("bn", (2, 32), "finished", 91.60),
    ("gn", (1, 32), "finished", 90.10), ("gn", (4, 8), "finished", 90.30), ("gn", (16, 2), "incomplete", None),
    ("gn", (32, 1), "finished", 89.90),
    ("sn", (1, 32), "incomplete", None), ("sn", (4, 8), "finished", 91.00), ("sn", (16, 2), "finished", 90.40),
    ("sn", (32, 1), "finished", 89.70),
]
# written out by hand: columns by samples per GPU descending, then #GPUs
MINI_COLUMNS = ["(1,32)", "(2,32)", "(4,8)", "(16,2)", "(32,1)"]
MINI_TABLE = {
    "BN": ["91.20", "91.60", "90.80", "89.00", "diverged"],
    "GN": ["90.10", "not run", "90.30", "incomplete", "89.90"],
    "SN": ["incomplete", "not run", "91.00", "90.40", "89.70*"],
    "GN-BN": ["-1.10", "", "-0.50", "", ""],
    "SN-BN": ["", "", "+0.20", "+1.40", ""],
    "SN-GN": ["", "", "+0.70", "", "-0.20"],
}


def write_mini(root):
    for i, (norm, (g, b), status, top1) in enumerate(MINI_RUNS):
        weights = random_switch_weights(i, b > 1) if norm == "sn" and status == "finished" else None
        write_run(str(root), f"fmnist_{norm}_{g}x{b}", norm, (g, b), status, top1, None if top1 is None else 99.0,
                  using_bn=b > 1 or norm != "sn", depth=18, num_classes=10, data_root="data/fashion_mnist_20k",
                  width=16, small_stem=True, switch_weights=weights)
    return root


def figure_lines(root, reference=False):
    """{legend label: (x, y)} of the drawn lines with points, the off-line points, and the figure."""
    groups = [(key, aggregate(members, "top1")) for key, members in group_runs(read_runs(str(root))).items()]
    fig = accuracy_figure(groups, "top1", reference)
    ax = fig.axes[0]
    lines = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()
             if len(ln.get_xdata()) and not ln.get_label().startswith("_") and ln.get_linestyle() != "None"}
    markers = {(ln.get_xdata()[0], ln.get_ydata()[0]): ln.get_marker() for ln in ax.get_lines()
               if len(ln.get_xdata()) == 1 and ln.get_linestyle() == "None"}
    return lines, markers, fig


def test_mini_sweep_table_has_only_its_settings(tmp_path):
    proc = collect([write_mini(tmp_path / "runs"), "--out", tmp_path / "out"])
    md = (tmp_path / "out" / "results.md").read_text()
    assert list(parse_tables(md)) == [MINI]
    assert columns_of(md, MINI) == MINI_COLUMNS
    table = parse_tables(md)[MINI]
    assert {row: [table[row][c] for c in MINI_COLUMNS] for row in table} == MINI_TABLE
    rows = {r["run"]: r["status"] for r in csv.DictReader(io.StringIO((tmp_path / "out" / "results.csv").read_text()))}
    assert rows["fmnist_gn_16x2"] == rows["fmnist_sn_1x32"] == "incomplete" and rows["fmnist_bn_32x1"] == "diverged"
    # the finished SN run with the most samples per GPU; (1,32) has no final.json yet
    assert "sn_importance.png: SN importance weights of run fmnist_sn_4x8" in proc.stderr
    assert_png(tmp_path / "out" / "top1_vs_samples_per_gpu.png")
    assert_png(tmp_path / "out" / "sn_importance.png")


def test_mini_sweep_with_reference_keeps_the_paper_columns(tmp_path, capsys):
    code, out, err = collect_in_process([write_mini(tmp_path / "runs"), "--out", tmp_path, "--reference", "paper"],
                                        capsys)
    assert code == 0, err
    assert columns_of(out, MINI) == PAPER_COLUMNS + ["(2,32)", "(4,8)", "(16,2)", "(32,1)"]
    table = parse_tables(out)[MINI]
    assert (table["BN"]["(1,32)"], table["BN"]["(8,32)"], table["SN (paper)"]["(8,32)"]) == ("91.20", "not run", "76.9")


def test_mini_plot_joins_the_settings_of_equal_total_batch(tmp_path):
    lines, markers, fig = figure_lines(write_mini(tmp_path))
    assert lines == {
        "BN, total batch 32": ([2, 8, 32], [89.0, 90.8, 91.2]),
        "GN, total batch 32": ([1, 8, 32], [89.9, 90.3, 90.1]),
        "SN, total batch 32": ([1, 2, 8], [89.7, 90.4, 91.0]),
    }
    assert markers == {(32, 91.6): "s"}  # BN (2,32): alone at a total batch of 64
    ax = fig.axes[0]
    assert "8 GPUs" not in ax.get_xlabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == list(lines) + ["2 GPU(s), off the lines"]
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1  # outside: hides no point


def test_paper_plot_joins_the_8_gpu_settings(tmp_path):
    for norm, setting, top1 in (("bn", (8, 32), 76.1), ("gn", (8, 32), 75.55), ("gn", (8, 2), 74.0),
                                ("gn", (1, 16), 75.0), ("sn", (2, 16), 76.3)):
        write_run(str(tmp_path), f"{norm}_{setting[0]}x{setting[1]}", norm, setting, top1=top1, top5=92.0)
    lines, markers, fig = figure_lines(tmp_path)
    assert fig.axes[0].get_title() == PAPER_MODEL
    assert lines == {"BN, 8 GPUs": ([32], [76.1]), "GN, 8 GPUs": ([2, 32], [74.0, 75.55])}
    assert markers == {(16, 75.0): "s", (16, 76.3): "^"}  # (1,16) and (2,16): one shape per GPU count
    lines, _, _ = figure_lines(tmp_path, reference=True)
    assert lines["BN (paper), 8 GPUs"] == ([2, 4, 8, 16, 32], [65.3, 72.7, 75.2, 76.3, 76.4])  # (8,1) diverged
    assert lines["GN (paper), 8 GPUs"] == ([1, 2, 4, 8, 16, 32], [75.5, 75.9, 75.8, 76.0, 75.8, 75.9])


@pytest.mark.parametrize("settings, chosen", [
    ({"sn_a": (16, 2), "sn_b": (4, 8), "sn_c": (8, 4)}, "sn_b"),
    ({"sn_a": (1, 32), "sn_b": (8, 32), "sn_c": (8, 16)}, "sn_b"),  # the paper's (8,32) among equals
])
def test_default_sn_importance_run(tmp_path, capsys, settings, chosen):
    for name, setting in settings.items():
        write_run(str(tmp_path), name, "sn", setting, top1=70.0, top5=90.0, switch_weights=random_switch_weights(1))
    code, _, err = collect_in_process([tmp_path], capsys)
    assert code == 0 and f"sn_importance.png: SN importance weights of run {chosen}\n" in err
