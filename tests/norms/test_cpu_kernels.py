"""The compiled CPU SwitchNorm2d kernels (norms/kernels/sn_cpu.cpp) against the float64 oracle."""
import copy
import shutil

import pytest
import torch

import norms
from norms import SwitchNorm2d, SyncSwitchNorm2d
from norms.kernels import cpu, cpu_build
from tests.norms.helpers import GN_CPU, LAYOUTS, SN_CPU, kernel_step, make_pair, run_oracle, saved_numel

pytestmark = pytest.mark.usefixtures("compiled_kernels")  # tests/norms/conftest.py: builds or skips


def make_layer(c, seed=0, **kwargs):
    """A float32 SwitchNorm2d with impl="fused" and random parameters and buffers (test_fused's pair)."""
    return make_pair(c, dtype=torch.float32, seed=seed, **kwargs)[1]


def run(layer, x, dy, kernel=SN_CPU):
    """(y, dx, parameter grads) of sum(layer(x) * dy), checking the compiled kernels ran."""
    return kernel_step(layer, x, dy, kernel)


def assert_close(got, want, rtol, atol):
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.double(), w.double(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape,groups,using_bn", [
    ((4, 6, 5, 3), 1, True), ((4, 6, 5, 3), 2, True), ((6, 3, 1, 1), 3, True),
    ((2, 130, 3, 2), 1, True), ((3, 70, 4, 4), 1, False),  # C > 64: several channel blocks
    ((2, 20, 41, 39), 2, True)])  # 1599 positions: many float partial sums merged in double, and a tail
@pytest.mark.parametrize("training", [True, False])
def test_float32_matches_float64_oracle(layout, shape, groups, using_bn, training):
    layer = make_layer(shape[1], using_bn=using_bn, stat_groups=groups, momentum=0.2).train(training)
    torch.manual_seed(1)
    x = (torch.randn(shape) * 3 + 1).contiguous(memory_format=LAYOUTS[layout])
    dy = torch.randn(shape)
    y64, dx64, grads64, (rm, rv) = run_oracle(layer, x, dy, groups)
    y, dx, grads = run(layer, x, dy)
    assert y.is_contiguous(memory_format=LAYOUTS[layout]) and dx.is_contiguous(memory_format=LAYOUTS[layout])
    assert_close([y, dx, *grads], [y64, dx64, *grads64], rtol=1e-5, atol=2e-5)
    if using_bn:
        assert_close([layer.running_mean, layer.running_var], [rm, rv], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bfloat16_within_its_rounding(layout):
    layer = make_layer(6, stat_groups=2)
    torch.manual_seed(2)
    x = (torch.randn(4, 6, 5, 7) * 2 + 1).bfloat16().contiguous(memory_format=LAYOUTS[layout])
    dy = torch.randn(4, 6, 5, 7).bfloat16()
    y64, dx64, grads64, _ = run_oracle(layer, x, dy, 2)
    y, dx, grads = run(layer, x, dy)
    assert y.dtype == dx.dtype == torch.bfloat16
    scale = y64.abs().max(), dx64.abs().max()
    torch.testing.assert_close(y.double(), y64, rtol=2 ** -7, atol=2 ** -8 * scale[0].item())
    torch.testing.assert_close(dx.double(), dx64, rtol=2 ** -7, atol=2 ** -7 * scale[1].item())
    assert_close(grads, grads64, rtol=1e-4, atol=1e-4)  # float32 parameter grads from bf16 rounding of y


def test_large_mean_keeps_the_variance():
    """x = 1e4 + unit noise: E[x^2] - E[x]^2 in float32 loses the variance; the shifted double sums do not."""
    layer = make_layer(4)
    torch.manual_seed(3)
    x = 1e4 + torch.randn(4, 4, 8, 8)
    dy = torch.randn_like(x)
    y64, dx64, _, _ = run_oracle(layer, x, dy, 1)
    y, dx, _ = run(layer, x, dy)
    y_err = (y.double() - y64).abs().max().item()
    dx_err = ((dx.double() - dx64).abs().max() / dx64.abs().max()).item()
    print(f"compiled float32 vs float64 oracle at mean 1e4: output {y_err:.2e}, input grad (relative) {dx_err:.2e}")
    assert y_err < 5e-3 and dx_err < 5e-3  # a few ulps of 1e4 in float32


def test_batch_average_mode_and_recalibration_use_the_kernel_statistics():
    layer = make_layer(5, stat_groups=2, using_moving_average=False)
    before = layer.running_var.clone()
    x = torch.randn(4, 5, 3, 3)
    layer(x)
    assert torch.equal(layer.running_var, before)  # batch-average mode leaves the buffers
    batches = [torch.randn(4, 5, 3, 3) * s + s for s in (1.0, 2.0)]
    norms.recalibrate(torch.nn.Sequential(layer), batches, num_batches=2)
    mean_in = torch.stack([b.double().mean((2, 3)) for b in batches])  # (batch, N, C)
    torch.testing.assert_close(layer.running_mean.double(), mean_in.mean((0, 1)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["sn", "gn"])
def test_results_do_not_depend_on_the_thread_count(kind, layout):
    layer = make_layer(96) if kind == "sn" else norms.GroupNorm2d(8, 96)
    kernel = SN_CPU if kind == "sn" else GN_CPU
    x = torch.randn(8, 96, 20, 20).contiguous(memory_format=LAYOUTS[layout])  # above the one-thread size
    dy = torch.randn_like(x)
    threads = torch.get_num_threads()
    try:
        out = []
        for n in (1, 2):
            torch.set_num_threads(n)
            out.append(run(copy.deepcopy(layer), x, dy, kernel))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip([out[0][0], out[0][1], *out[0][2]], [out[1][0], out[1][1], *out[1][2]]):
        assert torch.equal(a, b)


def test_saves_only_x_and_small_statistics():
    layer = make_layer(8, stat_groups=2)
    x = torch.randn(4, 8, 6, 6, requires_grad=True)
    n, c = x.shape[:2]
    assert saved_numel(layer, x) == x.numel() + cpu.workspace_size(n, c, 2)
    assert cpu.workspace_size(n, c, 2) < 5 * n * c + 2 * n + 4 * c + 6


def test_other_inputs_take_the_torch_op_path(monkeypatch):
    layer = make_layer(4)
    for x in (torch.randn(2, 4, 3, 3, dtype=torch.float64),  # float64: the fused torch ops
              torch.randn(2, 4, 3, 6)[..., ::2],  # neither NCHW nor channels_last strides
              torch.randn(0, 4, 3, 3)):  # a rank without samples
        assert type(layer(x.requires_grad_()).grad_fn).__name__ != SN_CPU
    assert type(SwitchNorm2d(4, impl="reference")(torch.randn(2, 4, 3, 3, requires_grad=True)).grad_fn).__name__ \
        != SN_CPU
    monkeypatch.setenv("NORMS_CPU_KERNELS", "0")
    assert type(layer(torch.randn(2, 4, 3, 3, requires_grad=True)).grad_fn).__name__ == "_FusedNormBackward"


def test_sync_layer_without_process_group_equals_switch_norm():
    sync = SyncSwitchNorm2d(6, impl="fused")
    plain = SwitchNorm2d(6, impl="fused")
    plain.load_state_dict(sync.state_dict())
    x = torch.randn(4, 6, 3, 3)
    dy = torch.randn_like(x)
    for got, want in zip(run(sync, x, dy)[:2], run(plain, x, dy)[:2]):
        assert torch.equal(got, want)
    assert torch.equal(sync.running_mean, plain.running_mean)


@pytest.mark.slow
def test_build_cache_and_compiler_errors(tmp_path, monkeypatch):
    first = cpu_build.build(tmp_path)
    assert cpu_build.build(tmp_path) == first and first.exists()
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary left behind
    monkeypatch.setenv("CXX", shutil.which("false") or "/bin/false")
    with pytest.raises(RuntimeError, match="failed"):
        cpu_build.build(tmp_path / "other")
    assert list((tmp_path / "other").iterdir()) == []


def test_bfloat16_output_rounds_to_nearest_even_like_torch():
    """With weight 0 the output is the bias exactly, so its bf16 rounding must equal torch's, ties included."""
    layer = make_layer(4)
    with torch.no_grad():
        layer.weight.zero_()
        # 1 + 2^-8 and 1 + 3 * 2^-8 lie halfway between bf16 neighbours: ties go to the even mantissa
        layer.bias.copy_(torch.tensor([1 + 2 ** -8, 1 + 3 * 2 ** -8, -3.14159, 1e-3]))
    x = torch.randn(2, 4, 3, 3).bfloat16()
    y = run(layer, x, torch.ones_like(x))[0]
    assert torch.equal(y, layer.bias.detach().bfloat16()[None, :, None, None].expand_as(y))


def test_runs_inside_the_graph_under_torch_compile():
    """impl="fused" under torch.compile: the kernels' operator runs in the graph (no ctypes traced), same numbers."""
    layer = make_layer(8)
    compiled = torch.compile(copy.deepcopy(layer), backend="eager")  # dynamo's tracing; no C++ codegen needed
    x = torch.randn(4, 8, 5, 5)
    dy = torch.randn_like(x)
    x1 = x.clone().requires_grad_()
    y = compiled(x1)
    assert type(y.grad_fn).__name__ == SN_CPU
    (y * dy).sum().backward()
    want = run(layer, x, dy)
    assert torch.equal(y.detach(), want[0]) and torch.equal(x1.grad, want[1])
