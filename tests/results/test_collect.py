"""The results collector on synthetic run folders: table cells, differences, statuses, CSV, figures, paper rows."""
import csv
import io
import os

import numpy as np
import pytest
from PIL import Image

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

# typed here from arXiv:1806.10779 Table 1, independent of results/published.py
PAPER = {
    "BN": [76.4, 76.3, 75.2, 72.7, 65.3, 76.2, 76.5, None, 75.4],
    "GN": [75.9, 75.8, 76.0, 75.8, 75.9, 75.9, 75.8, 75.5, 75.5],
    "SN": [76.9, 76.7, 76.7, 75.9, 75.6, 76.3, 76.6, 75.0, 75.9],
}
HEADING = "ResNet-50 v1, 1000 classes, data data/imagenet"
# (folder, norm, (gpus, samples per GPU), status, top1, top5)
RUNS = [
    ("bn_8x32", "bn", (8, 32), "finished", 76.10, 92.90),
    ("gn_8x32", "gn", (8, 32), "finished", 75.55, 92.60),
    ("sn_8x32_a", "sn", (8, 32), "finished", 76.80, 93.30),
    ("sn_8x32_b", "sn", (8, 32), "finished", 76.60, 93.10),
    ("bn_8x2", "bn", (8, 2), "diverged", None, None),
    ("gn_8x2", "gn", (8, 2), "finished", 74.00, 91.00),
    ("sn_8x2", "sn", (8, 2), "finished", 75.25, 92.00),
    ("bn_8x4", "bn", (8, 4), "incomplete", None, None),
    ("sn_8x4", "sn", (8, 4), "finished", 75.13, 92.40),
    ("sn_8x1", "sn", (8, 1), "finished", 74.50, 91.70),
    ("bn_1x16", "bn", (1, 16), "finished", 76.00, 92.80),
    ("gn_1x16", "gn", (1, 16), "finished", 75.00, 92.20),
    ("syncbn_8x2", "syncbn", (8, 2), "finished", 73.00, 91.10),
    ("sweep/sn_2x16", "sn", (2, 16), "finished", 76.30, 93.00),
]
LABEL = {"bn": "BN", "gn": "GN", "sn": "SN", "syncbn": "SyncBN"}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for i, (name, norm, setting, status, top1, top5) in enumerate(RUNS):
        using_bn = setting[1] != 1  # the trainer's rule for SN at one sample per GPU
        weights = random_switch_weights(i, using_bn) if norm == "sn" and status == "finished" else None
        write_run(str(root), name, norm, setting, status, top1, top5, using_bn=using_bn, switch_weights=weights)
    return root


@pytest.fixture(scope="module")
def collected(runs_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    proc = collect([runs_dir, "--out", out])
    return {"out": out, "stdout": proc.stdout, "stderr": proc.stderr, "md": (out / "results.md").read_text()}


def expected_means():
    """{row label: {column: mean top-1}} over the finished runs, computed here from RUNS."""
    sums = {}
    for _, norm, (g, b), status, top1, _ in RUNS:
        if status == "finished":
            sums.setdefault(LABEL[norm], {}).setdefault(f"({g},{b})", []).append(top1)
    return {row: {col: sum(v) / len(v) for col, v in cols.items()} for row, cols in sums.items()}


def test_table_shape_cells_and_statuses(collected):
    tables = parse_tables(collected["md"])
    assert list(tables) == [HEADING]
    assert columns_of(collected["md"], HEADING) == PAPER_COLUMNS + ["(2,16)"]
    table = tables[HEADING]
    assert list(table) == ["BN", "GN", "SN", "SyncBN", "GN-BN", "SN-BN", "SN-GN"]
    assert table["BN"]["(8,32)"] == "76.10"
    assert table["SN"]["(8,32)"] == "76.70 (n=2)"          # mean of two finished runs
    assert table["BN"]["(8,2)"] == "diverged"
    assert table["BN"]["(8,4)"] == "incomplete"
    assert table["GN"]["(8,4)"] == "not run"
    assert table["SN"]["(8,1)"] == "74.50*"                 # no BN branch at one sample per GPU
    assert table["SyncBN"]["(8,2)"] == "73.00"
    assert table["SN"]["(2,16)"] == "76.30"
    assert table["BN"]["(2,16)"] == "not run"
    assert "SN without its BN branch" in collected["md"]
    assert collected["md"] in collected["stdout"]          # printed as written


def test_difference_rows_only_where_both_have_numbers(collected):
    table = parse_tables(collected["md"])[HEADING]
    means = expected_means()
    for row, (a, b) in {"GN-BN": ("GN", "BN"), "SN-BN": ("SN", "BN"), "SN-GN": ("SN", "GN")}.items():
        for col in PAPER_COLUMNS + ["(2,16)"]:
            if col in means.get(a, {}) and col in means.get(b, {}):
                assert float(table[row][col]) == pytest.approx(means[a][col] - means[b][col], abs=0.005), (row, col)
                assert table[row][col][0] in "+-"
            else:
                assert table[row][col] == "", (row, col)
    assert table["SN-BN"]["(8,32)"] == "+0.60" and table["GN-BN"]["(8,32)"] == "-0.55"


def test_csv_has_one_row_per_run(collected):
    rows = list(csv.DictReader(io.StringIO((collected["out"] / "results.csv").read_text())))
    by_run = {r["run"]: r for r in rows}
    assert set(by_run) == {name for name, *_ in RUNS} and all(r["source"] == "run" for r in rows)
    for name, norm, (g, b), status, top1, top5 in RUNS:
        row = by_run[name]
        assert (row["norm"], int(row["gpus"]), int(row["samples_per_gpu"]), row["status"]) == (norm, g, b, status)
        if status == "finished":
            assert (float(row["top1"]), float(row["top5"])) == (top1, top5)
        else:
            assert row["top1"] == row["top5"] == ""
        assert row["group"] == HEADING
    assert "non-finite" in by_run["bn_8x2"]["error"]
    assert by_run["sn_8x1"]["using_bn"] == "False"


@pytest.mark.slow
def test_figures_are_written(collected, runs_dir, tmp_path):
    assert_png(collected["out"] / "top1_vs_samples_per_gpu.png")
    assert_png(collected["out"] / "sn_importance.png")
    assert "sn_importance.png: SN importance weights of run sn_8x32_a\n" in collected["stderr"]  # (8,32) first
    collect([runs_dir, "--out", tmp_path, "--sn-run", "all"])
    sn_runs = [name for name, norm, _, status, *_ in RUNS if norm == "sn" and status == "finished"]
    written = sorted(p.name for p in tmp_path.glob("sn_importance_*.png"))
    assert written == sorted(f"sn_importance_{n.replace('/', '_')}.png" for n in sn_runs)
    for name in written:
        assert_png(tmp_path / name)


BRANCH_RGB = {"in": (0x4C, 0x72, 0xB0), "ln": (0x55, 0xA8, 0x68), "bn": (0xC4, 0x4E, 0x52)}


def pixel_counts(image, top):
    """Pixels of each branch colour in the upper (means) or lower (variances) half of the figure."""
    pixels = np.asarray(image.convert("RGB"))
    half = pixels[:len(pixels) // 2] if top else pixels[len(pixels) // 2:]
    return {b: int((half == rgb).all(axis=2).sum()) for b, rgb in BRANCH_RGB.items()}


def test_importance_bars_are_stacked_in_proportion(tmp_path):
    """Means 0.5/0.3/0.2 in every layer, variances all LN: the bar areas show exactly that."""
    layers = [f"layer{i}.bn1" for i in range(12)]
    weights = {layer: {"mean_in": 0.5, "mean_ln": 0.3, "mean_bn": 0.2, "var_in": 0.0, "var_ln": 1.0, "var_bn": 0.0}
               for layer in layers}
    write_run(str(tmp_path / "runs"), "sn", "sn", (8, 32), top1=70.0, top5=90.0, switch_weights=weights)
    collect([tmp_path / "runs", "--out", tmp_path])
    with Image.open(tmp_path / "sn_importance.png") as image:
        top, bottom = pixel_counts(image, True), pixel_counts(image, False)
    assert top["in"] / top["bn"] == pytest.approx(0.5 / 0.2, rel=0.1)
    assert top["ln"] / top["bn"] == pytest.approx(0.3 / 0.2, rel=0.1)
    assert bottom["ln"] > 1000 and bottom["in"] == bottom["bn"] == 0


def test_models_are_not_mixed(tmp_path):
    write_run(str(tmp_path), "r50_bn", "bn", (8, 32), top1=76.0, top5=93.0)
    write_run(str(tmp_path), "r18_bn", "bn", (8, 32), top1=70.0, top5=89.0, depth=18)
    write_run(str(tmp_path), "r50_fm_sn", "sn", (8, 4), top1=91.0, top5=99.0, num_classes=10,
              data_root="data/fashion_mnist")
    tables = parse_tables(collect([tmp_path]).stdout)
    assert set(tables) == {HEADING, "ResNet-18 v1, 1000 classes, data data/imagenet",
                           "ResNet-50 v1, 10 classes, data data/fashion_mnist"}
    assert tables[HEADING]["BN"]["(8,32)"] == "76.00" and tables[HEADING]["SN"]["(8,4)"] == "not run"
    assert tables["ResNet-18 v1, 1000 classes, data data/imagenet"]["BN"]["(8,32)"] == "70.00"
    assert tables["ResNet-50 v1, 10 classes, data data/fashion_mnist"]["SN"]["(8,4)"] == "91.00"
    assert (tmp_path / "results.md").is_file()  # --out defaults to the runs folder


def test_reference_paper_rows_and_differences(runs_dir, tmp_path):
    proc = collect([runs_dir, "--out", tmp_path, "--reference", "paper"])
    table = parse_tables(proc.stdout)[HEADING]
    for norm, values in PAPER.items():
        for col, value in zip(PAPER_COLUMNS, values):
            expected = "did not converge" if value is None else f"{value:.1f}" + ("*" if (norm, col) == ("SN", "(8,1)")
                                                                                 else "")
            assert table[f"{norm} (paper)"][col] == expected
        assert table[f"{norm} (paper)"]["(2,16)"] == ""
    for a, b in (("GN", "BN"), ("SN", "BN"), ("SN", "GN")):
        for col, va, vb in zip(PAPER_COLUMNS, PAPER[a], PAPER[b]):
            cell = table[f"{a}-{b} (paper)"][col]
            assert cell == ("" if va is None or vb is None else f"{va - vb:+.1f}")
    assert table["GN-BN (paper)"]["(8,2)"] == "+10.6" and table["SN-GN (paper)"]["(8,1)"] == "-0.5"
    assert table["SN"]["(8,32)"] == "76.70 (n=2)"  # our rows stay
    paper_rows = [r for r in csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text()))
                  if r["source"] == "paper"]
    assert len(paper_rows) == 27
    assert {(r["norm"], r["gpus"], r["samples_per_gpu"], r["top1"]) for r in paper_rows} >= {
        ("sn", "8", "32", "76.9"), ("bn", "8", "1", ""), ("gn", "1", "8", "75.5")}


def test_reference_paper_alone_without_runs(tmp_path):
    (tmp_path / "runs").mkdir()
    proc = collect([tmp_path / "runs", "--reference", "paper"])
    tables = parse_tables(proc.stdout)
    assert len(tables) == 1
    (heading, table), = tables.items()
    assert "published" in heading
    assert list(table) == ["BN (paper)", "GN (paper)", "SN (paper)", "GN-BN (paper)", "SN-BN (paper)",
                           "SN-GN (paper)"]
    assert [table["BN (paper)"][c] for c in PAPER_COLUMNS][:5] == ["76.4", "76.3", "75.2", "72.7", "65.3"]
    assert_png(tmp_path / "runs" / "top1_vs_samples_per_gpu.png")


def test_best_top1_metric(tmp_path, capsys):
    write_run(str(tmp_path), "sn", "sn", (8, 16), top1=75.0, top5=92.0, best_top1=75.4)
    for args, cell in (([], "75.00"), (["--metric", "best_top1"], "75.40")):
        code, out, _ = collect_in_process([tmp_path] + args, capsys)
        assert code == 0 and parse_tables(out)[HEADING]["SN"]["(8,16)"] == cell


def test_clear_errors(tmp_path, capsys):
    def fails(args):
        code, _, err = collect_in_process(args, capsys)
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
        return err
    assert "runs folder not found" in fails([tmp_path / "absent"])
    (tmp_path / "empty").mkdir()
    assert "no runs under" in fails([tmp_path / "empty"]) and "--reference paper" in fails([tmp_path / "empty"])
    folder = write_run(str(tmp_path / "runs"), "sn", "sn", (8, 32), top1=70.0, top5=90.0)
    assert "no such run" in fails([tmp_path / "runs", "--sn-run", "other"])
    with open(os.path.join(folder, "final.json"), "w") as f:
        f.write("{truncated")
    message = fails([tmp_path / "runs"])
    assert "final.json: not valid JSON" in message and folder in message
