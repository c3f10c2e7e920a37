"""torch.compile keeps the snorm custom operators in one graph; torch.library.opcheck on each operator."""
import copy

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import norms
from norms.kernels import ops
from tests.norms.helpers import LAYOUTS, gn_inputs, sn_inputs

pytestmark = pytest.mark.usefixtures("compiled_kernels")  # tests/norms/conftest.py: builds or skips


class Block(torch.nn.Module):
    """conv, SN, relu, GN: a small stand-in for a ResNet block with both kernel kinds."""

    def __init__(self, c=8):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, c, 3, padding=1)
        self.sn = norms.SwitchNorm2d(c, momentum=0.1, stat_groups=2)
        self.gn = norms.GroupNorm2d(2, c)

    def forward(self, x):
        return self.gn(torch.relu(self.sn(self.conv(x))))


def reference_copy(model):
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, norms.fused.ImplChoice):
            m.impl = "reference"
    return ref


def step(model, x, dy):
    x = x.detach().clone().requires_grad_()
    y = model(x)
    (y * dy).sum().backward()
    return [y.detach(), x.grad, *[p.grad for p in model.parameters()], *model.buffers()]


def check_compiled(backend, layout, training=True):
    norms.backends.reset()  # the choice is made while tracing, not found in a cache other tests filled
    torch.manual_seed(0)
    model = Block().train(training)
    ref = reference_copy(model)
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(model, backend=counter, fullgraph=True)  # fullgraph: a graph break is an error
    x = (torch.randn(4, 3, 6, 5) * 2 + 1).contiguous(memory_format=LAYOUTS[layout])
    dy = torch.randn(4, 8, 6, 5)
    for _ in range(2):  # the second call reuses the graph and moves the buffers again
        got, want = step(compiled, x, dy), step(ref, x, dy)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-5)
        model.zero_grad()
        ref.zero_grad()
    assert counter.frame_count == 1
    code = counter.graphs[0].code
    assert "snorm.switch_norm_cpu" in code and "snorm.group_norm_cpu" in code  # the kernels, not the reference


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("training", [True, False])
def test_fullgraph_compile_keeps_the_kernels_and_matches_eager_reference(layout, training):
    check_compiled("aot_eager", layout, training)


@pytest.mark.slow
def test_inductor_compiles_the_kernels_into_its_graph():
    check_compiled("inductor", "channels_last")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("training,branches", [(True, 3), (False, 3), (True, 2)])
def test_opcheck_switch_norm_cpu(layout, training, branches):
    torch.library.opcheck(ops.switch_norm_cpu, sn_inputs(layout, training, branches))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("affine", [True, False])
def test_opcheck_group_norm_cpu(layout, affine):
    torch.library.opcheck(ops.group_norm_cpu, gn_inputs(layout, affine))


def test_opcheck_bfloat16():
    torch.library.opcheck(ops.switch_norm_cpu, sn_inputs("channels_last", True, dtype=torch.bfloat16))
    torch.library.opcheck(ops.group_norm_cpu, gn_inputs("nchw", True, dtype=torch.bfloat16))



def test_where_only_the_generic_fused_path_exists_compile_runs_the_reference():
    """float64 SN: eager runs norms/fused.py, compiled the reference (one graph), with equal results."""
    torch.manual_seed(0)
    layer = norms.SwitchNorm2d(6, momentum=0.1, stat_groups=2, impl="fused").double()
    ref = reference_copy(layer)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(4, 6, 5, 3, dtype=torch.float64)
    dy = torch.randn_like(x)
    for a, b in zip(step(compiled, x, dy), step(ref, x, dy), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_the_choice_is_marked_as_a_constant_of_the_trace():
    """norms.backends marks `_resolve` by hand (torch.compiler's decorator imports torch._dynamo at `import norms`)."""
    from norms import backends

    def probe():
        pass

    marked = torch.compiler.assume_constant_result(probe)
    assert vars(marked) and all(getattr(backends._resolve, k) == v for k, v in vars(marked).items())


def test_import_stays_light():
    import subprocess
    import sys
    code = "import sys, norms; print(sorted(m for m in ('triton', 'torch._dynamo') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
