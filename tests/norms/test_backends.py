"""norms.backends: which implementation runs where (the table of docs/kernels.md) and the first-use self-check."""
import copy
import warnings
from pathlib import Path

import pytest
import torch

import norms
from norms import GroupNorm2d, SwitchNorm2d, backends
from norms.kernels import cpu
from tests.norms.helpers import make_pair

pytestmark = pytest.mark.usefixtures("compiled_kernels")  # tests/norms/conftest.py: builds or skips
F32, BF16, F64, F16 = torch.float32, torch.bfloat16, torch.float64, torch.float16


@pytest.fixture(autouse=True)
def fresh_choices():
    backends.reset()
    yield
    backends.reset()


@pytest.mark.parametrize("key,expected", [
    # (kind, impl, device, dtype, layout, BN local, parameter dtype, compiling)
    (("sn", "auto", "cpu", F32, "nchw", True, F32, False), "cpu_kernels"),
    (("sn", "auto", "cpu", BF16, "channels_last", True, F32, False), "cpu_kernels"),
    (("sn", "auto", "cpu", F32, "nchw", True, F32, True), "cpu_kernels"),  # custom operators: in the graph
    (("sn", "auto", "cpu", F32, "other", True, F32, False), "fused_torch"),
    (("sn", "auto", "cpu", F64, "nchw", True, F64, False), "fused_torch"),
    (("sn", "auto", "cpu", F16, "nchw", True, F32, False), "fused_torch"),
    (("sn", "auto", "cpu", F32, "nchw", True, F64, False), "fused_torch"),  # kernels take float32 parameters
    (("sn", "auto", "cpu", F32, "empty", True, F32, False), "fused_torch"),
    (("sn", "auto", "cpu", F32, "nchw", False, F32, False), "fused_torch"),  # SyncSN across processes
    (("sn", "auto", "cpu", F64, "nchw", True, F64, True), "reference"),  # the fused Function cannot be traced
    (("sn", "fused", "cpu", F64, "nchw", False, F64, True), "reference"),
    (("sn", "reference", "cpu", F32, "nchw", True, F32, False), "reference"),
    (("gn", "auto", "cpu", F32, "channels_last", True, F32, False), "cpu_kernels"),
    (("gn", "auto", "cpu", F32, "nchw", True, None, False), "cpu_kernels"),  # affine=False
    (("gn", "auto", "cpu", F64, "nchw", True, F64, False), "reference"),
    (("gn", "fused", "cpu", F64, "nchw", True, F64, False), "fused_torch"),
    (("gn", "fused", "cpu", F32, "other", True, F32, True), "reference"),
    (("gn", "auto", "cpu", F32, "empty", True, F32, False), "reference")])
def test_the_table_on_the_cpu(monkeypatch, key, expected):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert backends.decide(*key) == expected


@pytest.mark.parametrize("triton,key,expected", [
    (True, ("sn", "auto", "cuda", BF16, "channels_last", True), "triton"),
    (True, ("sn", "auto", "cuda", F32, "other", True), "triton"),
    (True, ("sn", "auto", "cuda", F32, "nchw", False), "fused_torch"),  # with the Triton primitives
    (True, ("sn", "auto", "cuda", F32, "empty", True), "reference"),  # nothing to launch
    (True, ("gn", "auto", "cuda", F16, "nchw", True), "triton"),
    (False, ("sn", "auto", "cuda", F32, "nchw", True), "reference"),
    (False, ("sn", "fused", "cuda", F32, "nchw", True), "fused_torch"),
    (False, ("gn", "auto", "cuda", F32, "nchw", True), "reference")])
def test_the_table_on_cuda(monkeypatch, triton, key, expected):
    monkeypatch.setattr(norms.kernels, "triton_available", lambda: triton)
    assert backends.decide(*key) == expected


def test_the_interpreter_runs_the_triton_kernels_on_cpu_tensors(monkeypatch):
    monkeypatch.setattr(norms.kernels, "interpreted", lambda: True)
    monkeypatch.setattr(norms.kernels, "triton_available", lambda: True)
    assert backends.decide("sn", "auto", "cpu", F32, "nchw") == "triton"
    assert backends.decide("gn", "fused", "cpu", F64, "channels_last") == "triton"


def test_disabled_cpu_kernels_take_the_next_row(monkeypatch):
    monkeypatch.setenv("NORMS_CPU_KERNELS", "0")
    assert backends.decide("sn", "auto", "cpu", F32, "nchw") == "fused_torch"
    assert backends.decide("gn", "auto", "cpu", F32, "nchw") == "reference"


def test_layers_run_what_the_table_says_and_the_choice_is_cached():
    x = torch.randn(4, 6, 3, 3)
    sn, gn = SwitchNorm2d(6), GroupNorm2d(2, 6)
    assert backends.choose(sn, x) == backends.choose(gn, x) == "cpu_kernels"
    assert backends.choose(sn, x.double()) == "fused_torch" and backends.choose(gn, x.double()) == "reference"
    assert backends.layout(x[..., ::2]) == "other" and backends.layout(x[:0]) == "empty"
    backends.forward(sn, x)
    cached = dict(backends._cache)
    backends.forward(sn, x)
    assert backends._cache == cached  # the second call decided nothing


def test_docs_show_the_table():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "kernels.md").read_text()
    assert backends.table_markdown() in docs


def wrong_sn_kernel(monkeypatch):
    """The compiled SN kernel with every output 1% too large (what a miscompiled kernel might do)."""
    real = cpu.switch_norm_forward

    def wrong(*args):
        y, workspace = real(*args)
        return y * 1.01, workspace

    monkeypatch.setattr(cpu, "switch_norm_forward", wrong)


def test_a_disagreeing_kernel_falls_back_to_the_reference_with_one_warning(monkeypatch):
    """A stand-in for a CUDA device on the CPU: the compiled CPU kernels take the place of the Triton ones in
    SELF_CHECKED, and the injected wrong kernel takes the place of a Triton kernel that a GPU miscompiles."""
    monkeypatch.setattr(backends, "SELF_CHECKED", {("cpu_kernels", "cpu")})
    wrong_sn_kernel(monkeypatch)
    ref, layer = make_pair(8, dtype=F32, stat_groups=2)
    layer.impl = "auto"
    x = (torch.randn(4, 8, 5, 5) * 2 + 1).contiguous(memory_format=torch.channels_last)
    with pytest.warns(RuntimeWarning, match=r"^SwitchNorm2d: the cpu_kernels kernels disagree with the reference on "
                                            r"cpu for float32 channels_last input \(train output: relative error "
                                            r"\S+ > 0.0001\); SwitchNorm2d layers use the reference"):
        y = layer(x)
    torch.testing.assert_close(y, ref(x), rtol=0, atol=0)  # the reference ran
    torch.testing.assert_close(layer.running_mean, ref.running_mean, rtol=0, atol=0)
    [record] = backends.fallbacks()
    assert {k: record[k] for k in ("layer", "backend", "device", "dtype", "layout")} == dict(
        layer="SwitchNorm2d", backend="cpu_kernels", device="cpu", dtype="float32", layout="channels_last")
    assert "relative error" in record["error"] and record["seconds"] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: no second warning
        layer(x)
        assert backends.choose(SwitchNorm2d(8), x.contiguous()) == "reference"  # every SN layer, every key
        assert backends.choose(SwitchNorm2d(8, impl="fused"), x) == "reference"
        assert backends.choose(GroupNorm2d(2, 8), x) == "cpu_kernels"  # GN's kernels passed their own check
    assert len(backends.fallbacks()) == 1


def test_agreeing_kernels_pass_the_check_once_per_dtype_and_layout(monkeypatch):
    monkeypatch.setattr(backends, "SELF_CHECKED", {("cpu_kernels", "cpu")})
    sn, gn = SwitchNorm2d(8), GroupNorm2d(4, 8)
    x = torch.randn(2, 8, 3, 3)
    for _ in range(2):
        for layer in (sn, gn):
            for t in (x, x.contiguous(memory_format=torch.channels_last), x.bfloat16()):
                assert type(copy.deepcopy(layer)(t).grad_fn).__name__.startswith("GeneratedBackwardFor_snorm_")
    checks = backends.self_checks()
    assert [(c["layer"], c["dtype"], c["layout"]) for c in checks] == [
        (name, dtype, layout) for name in ("SwitchNorm2d", "GroupNorm2d")
        for dtype, layout in (("float32", "nchw"), ("float32", "channels_last"), ("bfloat16", "nchw"))]
    assert all(c["error"] is None for c in checks) and backends.fallbacks() == []


def test_without_the_hook_cpu_kernels_are_not_self_checked():
    SwitchNorm2d(4)(torch.randn(2, 4, 3, 3))
    assert backends.self_checks() == []
