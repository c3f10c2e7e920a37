"""scripts/benchmark.py --quick on the CPU, end to end: every section's JSON checked by recomputation."""
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.variants import VARIANTS
from tests.benchmarks.torchvision_shapes import torchvision_shapes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ALWAYS_AVAILABLE = ("bn", "gn", "sn-reference")
BYTES = {"fp32": 4, "bf16": 2}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(JSON, stdout) of one quick run of every section."""
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "out.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "--device", "cpu", "--quick",
                           "--json", str(out), "--cache-dir", str(tmp / "cache")],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def available(data):
    names = [v for v, d in data["variants"].items() if d["available"]]
    assert set(ALWAYS_AVAILABLE) <= set(names)
    return names


def test_environment_and_variants(run):
    data, stdout = run
    env = data["environment"]
    assert env["device"] == "cpu" and env["torch_threads"] >= 1 and env["torch"] and env["date"][:2] == "20"
    assert list(data["variants"]) == list(VARIANTS)
    for name, d in data["variants"].items():
        assert d["available"] or d["reason"].startswith("not available"), name
    assert "ResNet-50 sum" in stdout and "max per-layer ratio" in stdout and "n/a: no CUDA" in stdout


def test_layer_shapes_are_resnet50s(run):
    data, _ = run
    layers = data["layers"]
    expected = torchvision_shapes(data["settings"]["shape_size"])
    assert [(tuple(s["chw"]), s["count"]) for s in layers["shapes"]] == expected
    combos = {(r["batch"], r["precision"], r["layout"]) for r in layers["runs"]}
    assert combos == {(n, p, l) for n in data["settings"]["layer_batch"] for p in ("fp32", "bf16")
                      for l in ("nchw", "channels_last")}
    for r in layers["runs"]:
        assert [(tuple(s["shape"]), s["count"]) for s in r["shapes"]] == [((r["batch"], *c), k) for c, k in expected]


def test_layer_medians_ratios_and_bandwidth(run):
    data, _ = run
    layers = data["layers"]
    copy = layers["copy"]
    rate = 2 * copy["bytes"] / copy["median_s"]  # bytes read + written per second
    assert copy["bytes_per_s"] == pytest.approx(rate, rel=1e-12)
    names = available(data)
    for r in layers["runs"]:
        totals = {v: 0.0 for v in names}
        floor_total = 0
        for s in r["shapes"]:
            assert s["errors"] == {} or set(s["errors"]) <= {"gn-fused", "sn-fused"}
            assert set(s["median_s"]) | set(s["errors"]) == set(names)
            floor = 8 * math.prod(s["shape"]) * BYTES[r["precision"]]
            floor_total += s["count"] * floor
            for v, median in s["median_s"].items():
                assert median == pytest.approx(statistics.median(s["samples_s"][v]), rel=1e-12)
                assert s["bandwidth_fraction"][v] == pytest.approx(floor / (median * rate), rel=1e-9)
                if v != "bn":
                    assert s["ratio_to_bn"][v] == pytest.approx(median / s["median_s"]["bn"], rel=1e-12)
                totals[v] += s["count"] * median
        for v, total in r["total_s"].items():
            assert total == pytest.approx(totals[v], rel=1e-12)
            assert r["total_bandwidth_fraction"][v] == pytest.approx(floor_total / (total * rate), rel=1e-9)
            if v != "bn":
                assert r["total_ratio_to_bn"][v] == pytest.approx(total / totals["bn"], rel=1e-12)
                worst = max(r["shapes"], key=lambda s: s["median_s"][v] / s["median_s"]["bn"])
                assert r["max_ratio_to_bn"][v]["ratio"] == pytest.approx(
                    worst["median_s"][v] / worst["median_s"]["bn"], rel=1e-12)
                assert r["max_ratio_to_bn"][v]["shape"] == worst["shape"]
        assert set(ALWAYS_AVAILABLE) <= set(r["total_s"])


def test_network_throughput_and_ratios(run):
    data, _ = run
    names = available(data)
    runs = data["network"]["runs"]
    assert {(r["precision"], r["layout"]) for r in runs} == {(p, l) for p in ("fp32", "bf16")
                                                            for l in ("nchw", "channels_last")}
    for r in runs:
        assert list(r["variants"]) == [v for v in VARIANTS if v in names]
        bn = r["variants"]["bn"]["median_s"]
        for v, rec in r["variants"].items():
            if v not in ALWAYS_AVAILABLE and "error" in rec:
                continue
            assert rec["median_s"] == pytest.approx(statistics.median(rec["samples_s"]), rel=1e-12)
            assert rec["images_per_s"] == pytest.approx(r["batch"] / rec["median_s"], rel=1e-12)
            assert rec["steps_per_s"] == pytest.approx(1 / rec["median_s"], rel=1e-12)
            if v != "bn":
                assert rec["step_ratio_to_bn"] == pytest.approx(rec["median_s"] / bn, rel=1e-12)
            assert rec["peak_memory_bytes"] is None and rec["memory_note"].startswith("n/a")


def test_pipeline_rates_from_arrival_times(run):
    data, _ = run
    pipe = data["pipeline"]
    assert pipe["gpu"] == {"images_per_s": None, "note": "n/a: no CUDA"}
    assert [rec["workers"] for rec in pipe["cpu"]] == data["settings"]["workers"]
    for rec in pipe["cpu"]:
        w, b = max(rec["workers"], 1), rec["batch"]
        steady, cold = [], []
        for arrivals in rec["arrivals_s"]:
            assert len(arrivals) == pipe["files"] // b and arrivals == sorted(arrivals)
            # Whole rounds of w batches after the first round: batches w .. (rounds*w - 1).
            rounds = len(arrivals) // w
            steady.append(b * w * (rounds - 1) / (arrivals[rounds * w - 1] - arrivals[w - 1]))
            cold.append(b * len(arrivals) / arrivals[-1])
        assert rec["images_per_s"] == pytest.approx(statistics.median(steady), rel=1e-12)
        assert rec["images_per_s_with_startup"] == pytest.approx(statistics.median(cold), rel=1e-12)


def test_generated_jpegs_look_like_imagenet_files(run):
    data, _ = run
    pipe = data["pipeline"]
    files = sorted(Path(pipe["folder"]).glob("train/*/*.JPEG"))
    assert len(files) == pipe["files"] == data["settings"]["pipeline_images"]
    sizes = [f.stat().st_size for f in files]
    assert 50_000 < statistics.mean(sizes) < 200_000
    assert pipe["mean_file_bytes"] == pytest.approx(statistics.mean(sizes[:pipe["unique_files"]]))
    with Image.open(files[0]) as image:
        assert image.format == "JPEG" and image.size == (500, 375) and image.mode == "RGB"
