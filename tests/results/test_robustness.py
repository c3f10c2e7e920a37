"""Robustness metrics from their definitions: mean error, mCE (AlexNet), relative CE, records, table, plots, CLI."""
import csv
import io
import json
import os

import pytest

from results.robustness import (
    ResultsError,
    build_tables,
    csv_text,
    load_records,
    markdown,
    reading,
    relative_errors,
    summarize,
)
from tests.results.fixtures import assert_png, collect

# typed here from hendrycks/robustness (ImageNet-C get_ce_alexnet) / AugMix's ALEXNET_ERR, in ImageNet-C's order
ALEXNET = [("gaussian_noise", 0.886428), ("shot_noise", 0.894468), ("impulse_noise", 0.922640),
           ("defocus_blur", 0.819880), ("glass_blur", 0.826268), ("motion_blur", 0.785948), ("zoom_blur", 0.798360),
           ("snow", 0.866816), ("frost", 0.826572), ("fog", 0.819324), ("brightness", 0.564592),
           ("contrast", 0.853204), ("elastic_transform", 0.646056), ("pixelate", 0.717840),
           ("jpeg_compression", 0.606500)]
NAMES = [c for c, _ in ALEXNET]


def domain(corruption, severity, error, images=200):
    correct = round(images * (100 - error) / 100)
    return {"corruption": corruption, "severity": severity, "images": images, "correct1": correct,
            "top1": 100 - error, "error": error, "loss": 0.5, "unreadable": 0}


def record(norm, method, batch, error_of, run=None, imagenet_c=True, corruptions=NAMES, severities=range(1, 6),
           **extra):
    """A record as eval.py writes it; error_of(corruption index, severity) -> error %."""
    return {"kind": "robustness", "schema": 1, "checkpoint": f"runs/{norm}/checkpoint.pt", "format": "repo",
            "norm": norm, "run": run or f"{norm}_run", "method": method, "adapt_batch": batch,
            "prior_n": 16.0 if method == "prior" else None, "tent": None, "stream_seed": 0, "world": 1,
            "corruptions_root": "data/c", "imagenet_c": imagenet_c,
            "domains": [domain(c, s, error_of(i, s)) for i, c in enumerate(corruptions) for s in severities],
            "summary": {}, "seconds": 1.0, **extra}


def write(folder, name, rec, mtime=None):
    path = os.path.join(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(rec, f)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_constant_error_gives_mce_from_alexnet():
    e = 37.5
    s = summarize(record("bn", "source", None, lambda i, s: e)["domains"], imagenet_c=True)
    assert s["mean_error"] == pytest.approx(e)
    assert s["mce"] == pytest.approx(100 * sum(e / 100 / a for _, a in ALEXNET) / 15, rel=1e-12)
    assert s["mce_note"] is None
    assert set(s["severity_errors"]) == {"1", "2", "3", "4", "5"}


def test_hand_computed_errors_with_an_extra_corruption():
    rec = record("bn", "source", None, lambda i, s: 10 * (i % 6) + 2 * s + 1)
    rec["domains"] += [domain("spatter", s, 90.0 + s) for s in range(1, 6)]
    s = summarize(rec["domains"], imagenet_c=True)
    per = {c: 10 * (i % 6) + 7.0 for i, c in enumerate(NAMES)}  # mean over s of 2s+1 is 7
    assert s["mean_over"] == NAMES  # all 15 common present: the extra one stays out of the mean
    assert s["corruption_errors"]["spatter"] == pytest.approx(93.0)
    for c in NAMES:
        assert s["corruption_errors"][c] == pytest.approx(per[c])
    assert s["mean_error"] == pytest.approx(sum(per.values()) / 15)
    assert s["severity_errors"]["2"] == pytest.approx(sum(10 * (i % 6) + 5.0 for i in range(15)) / 15)
    mce = 100 * sum(per[c] / 100 / a for c, a in ALEXNET) / 15
    assert s["mce"] == pytest.approx(mce, rel=1e-12)
    assert s["ce"]["fog"] == pytest.approx(100 * per["fog"] / 100 / 0.819324)


def test_partial_domains_mean_over_present_and_no_mce():
    rec = record("gn", "source", None, lambda i, s: [20.0, 50.0][i] + s, corruptions=["fog", "spatter"],
                 severities=[1, 3])
    s = summarize(rec["domains"], imagenet_c=True)
    assert s["mean_over"] == ["fog", "spatter"]
    assert s["mean_error"] == pytest.approx((22.0 + 52.0) / 2)
    assert s["severity_errors"] == pytest.approx({"1": 36.0, "3": 38.0})
    assert s["mce"] is None and "missing" in s["mce_note"]


def test_mce_null_when_one_severity_is_missing_or_not_imagenet_c():
    rec = record("bn", "source", None, lambda i, s: 30.0)
    dropped = [d for d in rec["domains"] if (d["corruption"], d["severity"]) != ("snow", 4)]
    s = summarize(dropped, imagenet_c=True)
    assert s["mce"] is None and "snow severity 4" in s["mce_note"]
    s = summarize(rec["domains"], imagenet_c=False)
    assert s["mce"] is None and "ImageNet-C" in s["mce_note"]
    with pytest.raises(ResultsError, match="twice"):
        summarize(rec["domains"] + rec["domains"][:1], imagenet_c=True)


def test_relative_errors_by_hand():
    a = record("bn", "batch", 8, lambda i, s: 10.0 * s, corruptions=["fog", "snow"], severities=[1, 2, 3])
    b = record("gn", "source", None, lambda i, s: [5.0, 20.0, 7.0][i] * s, corruptions=["fog", "snow", "frost"],
               severities=[1, 2])
    r = relative_errors(a, b)
    # shared: fog and snow at severities 1, 2
    assert r["domains"] == 4
    assert r["ce"]["fog"] == pytest.approx(100 * (10 + 20) / (5 + 10))
    assert r["ce"]["snow"] == pytest.approx(100 * (10 + 20) / (20 + 40))
    assert r["mean"] == pytest.approx((200.0 + 50.0) / 2)
    with pytest.raises(ValueError, match="zero error on fog"):
        relative_errors(a, record("gn", "source", None, lambda i, s: 0.0, corruptions=["fog"]))
    with pytest.raises(ValueError, match="share no domain") as info:
        relative_errors(a, record("gn", "source", None, lambda i, s: 1.0, corruptions=["frost"]))
    assert "\n" not in str(info.value)


def test_load_records_skips_other_json_and_names_a_corrupt_file(tmp_path):
    write(tmp_path, "a/bn.json", record("bn", "source", None, lambda i, s: 30.0))
    write(tmp_path, "a/b/gn.json", record("gn", "batch", 4, lambda i, s: 35.0))
    write(tmp_path, "final.json", {"status": "finished", "top1": 70.0})
    records = load_records([str(tmp_path)])
    assert sorted(r.data["norm"] for r in records) == ["bn", "gn"]
    assert {r.data["norm"]: r.summary["mean_error"] for r in records} == pytest.approx({"bn": 30.0, "gn": 35.0})
    bad = tmp_path / "a" / "broken.json"
    bad.write_text('{"kind": "robustness", ')
    with pytest.raises(ResultsError) as info:
        load_records([str(tmp_path)])
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ResultsError, match="not a robustness record"):
        load_records([str(tmp_path / "final.json")])


# (norm, method, B, error at every domain): BN collapses at small B, GN is flat
GRID = [("bn", "source", None, 40.0), ("bn", "batch", 1, 80.0), ("bn", "batch", 8, 42.0),
        ("bn", "batch", 128, 38.0), ("gn", "source", None, 45.0), ("gn", "batch", 1, 45.5),
        ("gn", "batch", 128, 45.0), ("gn", "adabn", None, 44.0), ("sn", "prior", 16, 39.0)]


@pytest.fixture
def records_dir(tmp_path):
    folder = tmp_path / "records"
    for k, (norm, method, batch, e) in enumerate(GRID):
        write(folder, f"{norm}_{method}_{batch}.json", record(norm, method, batch, lambda i, s, e=e: e),
              mtime=1_000_000 + k)
    # a duplicate of BN batch B=8, older: it loses to the file above
    write(folder, "old/bn_batch_8.json", record("bn", "batch", 8, lambda i, s: 99.0), mtime=10)
    return folder


def parse(md):
    """{table title: {row: {column: text}}} of the collector's robustness.md."""
    tables, title, header = {}, None, None
    for line in md.splitlines():
        if line.startswith("### "):
            title, header = line[4:], None
            tables[title] = {}
        elif line.startswith("|") and title:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if header is None:
                header = cells
            elif not set(line) <= set("|- "):
                tables[title][cells[0]] = dict(zip(header[1:], cells[1:]))
    return tables


def test_table_cells_duplicates_and_reading(records_dir):
    tables = build_tables(load_records([str(records_dir)]))
    assert len(tables) == 1
    md = markdown(tables)
    t = parse(md)
    errors = t["mean error (%)"]
    assert list(errors) == ["BN source", "BN batch", "GN source", "GN adabn", "GN batch", "SN prior N=16"]
    assert errors["BN batch"] == {"any B": "", "B=1": "80.00", "B=8": "42.00", "B=16": "", "B=128": "38.00"}
    assert errors["BN source"]["any B"] == "40.00" and errors["SN prior N=16"]["B=16"] == "39.00"
    mce = t["mCE (%)"]
    expected = 100 * sum(38.0 / 100 / a for _, a in ALEXNET) / 15
    assert float(mce["BN batch"]["B=128"]) == pytest.approx(expected, abs=0.006)
    assert "old/bn_batch_8.json" in md and "replaces" in md  # the duplicate's note
    lines = reading(tables[0])
    assert "- BN+batch collapses below B=8: error 80.00% at B=1 vs 38.00% at B=128." in lines
    assert any(line.startswith("- GN+batch is flat: error 45.00-45.50%") for line in lines)
    rows = list(csv.DictReader(io.StringIO(csv_text(tables, baseline="gn_run"))))
    assert len(rows) == len(GRID)
    bn8 = next(r for r in rows if r["row"] == "BN batch" and r["adapt_batch"] == "8")
    assert float(bn8["relative_mce"]) == pytest.approx(100 * 42.0 / 45.0)
    assert bn8["replaced"].endswith("old/bn_batch_8.json")


@pytest.mark.slow
def test_cli_end_to_end_and_bad_input(records_dir, tmp_path):
    out = tmp_path / "out"
    proc = collect(["--robustness", records_dir, "--baseline", "bn_run", "--out", out])
    t = parse((out / "robustness.md").read_text())
    rel = t["relative mCE (%), baseline bn_run"]
    assert float(rel["GN source"]["any B"]) == pytest.approx(100 * 45.0 / 40.0, abs=0.006)
    assert "BN+batch collapses" in proc.stdout and "duplicate" in proc.stderr
    for name in ("robustness_error_vs_severity.png", "robustness_error_vs_batch.png"):
        assert_png(out / name)
    assert (out / "robustness.csv").read_text().startswith("table,row,run")
    for args, what in ((["--robustness", tmp_path / "missing"], "no such file or folder"),
                       (["--robustness", records_dir, "--baseline", "nope", "--out", out], "--baseline nope"),
                       (["--baseline", "bn_run"], "--baseline needs --robustness")):
        proc = collect(args, check=False)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and what in proc.stderr, proc.stderr


def test_plots_are_written(records_dir, tmp_path):
    from results.robustness_plots import plot_all
    names = plot_all(build_tables(load_records([str(records_dir)])), str(tmp_path))
    assert names == ["robustness_error_vs_severity.png", "robustness_error_vs_batch.png"]
    for name in names:
        assert_png(tmp_path / name)
