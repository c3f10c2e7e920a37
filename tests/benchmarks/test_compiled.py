"""The compile section (benchmark.py --what compile): its arithmetic on fixture medians, and one quick run on
the CPU (TorchDynamo's graph capture only) checked by recomputation from the JSON."""
import json
import statistics

import pytest

from benchmarks import cli, compiled


def test_summarize_rates_ratios_speedups_and_compile_time():
    variants = {
        "bn": {"eager": {"median_s": 0.2}, "compiled": {"median_s": 0.1, "first_step_s": 30.1}},
        "sn-fused": {"eager": {"median_s": 0.3}, "compiled": {"median_s": 0.25, "first_step_s": 40.25}},
        "gn-fused": {"eager": {"error": "RuntimeError: no kernel"}, "compiled": {"median_s": 0.4,
                                                                                 "first_step_s": 10.4}},
    }
    out = compiled.summarize(variants, batch=8)
    bn, sn, gn = out["bn"], out["sn-fused"], out["gn-fused"]
    assert bn["eager"]["images_per_s"] == pytest.approx(40.0) and bn["compiled"]["steps_per_s"] == pytest.approx(10)
    assert bn["compiled"]["compile_s"] == pytest.approx(30.0) and sn["compiled"]["compile_s"] == pytest.approx(40.0)
    assert "compile_s" not in bn["eager"]  # nothing is compiled eagerly
    assert sn["eager"]["step_ratio_to_bn"] == pytest.approx(1.5)
    assert sn["compiled"]["step_ratio_to_bn"] == pytest.approx(2.5)
    assert bn["compiled_speedup"] == pytest.approx(2.0) and sn["compiled_speedup"] == pytest.approx(1.2)
    assert "step_ratio_to_bn" not in bn["eager"] and "compiled_speedup" not in gn
    assert gn["compiled"]["step_ratio_to_bn"] == pytest.approx(4.0) and gn["eager"] == {"error": "RuntimeError: "
                                                                                         "no kernel"}


def test_compile_variants_must_include_bn(capsys):
    assert cli.main(["--device", "cpu", "--what", "compile", "--compile-variants", "sn-fused"]) == 2
    assert "--compile-variants must include bn" in capsys.readouterr().err


def test_cpu_defaults_are_small():
    d = cli.DEFAULTS["cpu"]
    assert (d["compile_depth"], d["compile_size"], d["compile_batch"], d["compile_backend"]) == (50, 96, [8],
                                                                                                "inductor")
    assert cli.DEFAULTS["cuda"]["compile_batch"] == [32, 256] and cli.DEFAULTS["cuda"]["compile_precision"] == "bf16"


@pytest.mark.slow
def test_quick_run_json(tmp_path, capsys):
    out = tmp_path / "out.json"
    assert cli.main(["--device", "cpu", "--quick", "--what", "compile", "--repeats", "2", "--json", str(out)]) == 0
    assert "Eager against torch.compile" in capsys.readouterr().out
    data = json.loads(out.read_text())["compile"]
    assert list(data["variants"]) == ["bn", "sn-fused"] and len(data["runs"]) == 1
    run = data["runs"][0]
    assert (run["depth"], run["image_size"], run["batch"], run["backend"]) == (18, 32, 2, "eager")
    bn = run["variants"]["bn"]
    for name, modes in run["variants"].items():
        for mode in compiled.MODES:
            rec = modes[mode]
            assert len(rec["samples_s"]) == 2, (name, mode, rec)
            assert rec["median_s"] == pytest.approx(statistics.median(rec["samples_s"]), rel=1e-12)
            assert rec["images_per_s"] == pytest.approx(2 / rec["median_s"], rel=1e-12)
            if name != "bn":
                assert rec["step_ratio_to_bn"] == pytest.approx(rec["median_s"] / bn[mode]["median_s"], rel=1e-12)
        c = modes["compiled"]
        assert c["compile_s"] == pytest.approx(c["first_step_s"] - c["median_s"], rel=1e-12)
        assert c["graph_breaks"] is not None and c["graphs"] >= 1
        assert modes["compiled_speedup"] == pytest.approx(modes["eager"]["median_s"] / c["median_s"], rel=1e-12)
