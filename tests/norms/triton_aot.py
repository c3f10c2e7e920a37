"""Compiles, without a GPU, every Triton kernel the fused layers launch, for a CUDA target (default sm_90).

Run as `python -m tests.norms.triton_aot [capability]` with TRITON_INTERPRET unset. Launches become
`warmup` compilations through a stand-in driver, so the layers' wrappers run on CPU tensors and pass
the argument types and constants they pass on a GPU; no kernel runs, outputs stay uninitialized.
The interpreter tests check what the kernels compute; this checks that the compiler takes them
(types, constexpr specializations such as counts of 1, fp64 math) down to a cubin.
Prints one line per compiled variant: kernel name, input dtype, constexpr arguments.
"""
import sys

import torch
from triton.backends.compiler import GPUTarget
from triton.runtime import driver
from triton.runtime.jit import JITFunction


class _CompileOnlyDriver:
    """What JITFunction.run asks of the driver before launching: a device, a stream and the target."""

    def __init__(self, capability):
        self.target = GPUTarget("cuda", capability, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target


def compile_everything(capability):
    from norms import GroupNorm2d
    from norms.fused import fused_norm
    from norms.kernels import ops, triton_nc

    compiled = []
    launch = JITFunction.run

    def compile_only(self, *args, grid, warmup, **kwargs):
        kernel = launch(self, *args, grid=grid, warmup=True, **kwargs)
        assert "cubin" in kernel.asm, f"{self.fn.__name__}: no cubin"
        constants = {p.name: kwargs[p.name] for p in self.params if p.is_constexpr and p.name in kwargs}
        compiled.append(f"{self.fn.__name__} {args[0].dtype} {constants}")

    JITFunction.run = compile_only
    driver.set_active(_CompileOnlyDriver(capability))
    # the GPU splits long reductions across programs: compile both the one-split and the split variants
    for programs in (1, 4 * 132):
        triton_nc._programs_wanted = lambda device, programs=programs: programs
        for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            for fmt in (torch.contiguous_format, torch.channels_last):
                for shape in ((8, 64, 14, 14), (4, 3, 1, 1)):
                    x = torch.randn(shape).to(dtype).contiguous(memory_format=fmt).requires_grad_()
                    params = [torch.ones(shape[1], requires_grad=True), torch.zeros(shape[1], requires_grad=True)]
                    for logits, running, groups in ((3, (), 2), (3, (torch.zeros(shape[1]), torch.ones(shape[1])), 1),
                                                    (2, (), 1)):
                        mw, vw = (torch.ones(logits, requires_grad=True) for _ in range(2))
                        y, _ = ops.switch_norm("triton", x, *params, mw, vw, *(running or (None, None)), groups,
                                               1e-5)
                        y.backward(torch.ones_like(y))
                    for groups, affine in ((1, True), (shape[1], False)):
                        gn = GroupNorm2d(groups, shape[1], affine=affine, impl="fused")
                        ops.group_norm("triton", x, gn.weight, gn.bias, groups, gn.eps).sum().backward()
                        # the generic fused path, which SyncSwitchNorm2d across processes takes
                        fused_norm(x, gn._fused_stats, gn.bias, (gn.weight,), prims=triton_nc).sum().backward()
    JITFunction.run = launch
    return sorted(set(compiled))


if __name__ == "__main__":
    for line in compile_everything(int(sys.argv[1]) if len(sys.argv) > 1 else 90):
        print(line)
