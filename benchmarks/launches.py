"""Kernel launches of one layer forward+backward: Triton launches and the torch operators that compute.

At 32 samples per GPU a norm layer's few megabytes take microseconds to stream, so its time is set
by how many kernels it launches (each a few microseconds of launch and Python). Counted by
dispatch, so it runs anywhere: Triton launches (compiled or interpreted) and torch operators that
are not views or bare allocations, each of which is at least one kernel on CUDA.
"""
import collections
import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# operators that allocate or reinterpret memory without computing: no kernel on CUDA
_NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "detach", "lift_fresh", "alias"}
# the torch.library operators of norms/kernels/ops.py: their work is the Triton launches inside, counted there
_WRAPPERS = {"snorm"}


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()
        self.paused = False  # inside a Triton launch: the interpreter's own tensor copies are not the layer's

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not self.paused and not func.is_view and name not in _NO_KERNEL and func.namespace not in _WRAPPERS:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _triton_launches(counter, ops):
    """Counts launches of every Triton kernel, compiled (JITFunction) or interpreted (InterpretedFunction)."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
        from triton.runtime.jit import JITFunction
    except ImportError:
        yield
        return
    originals = {cls: cls.run for cls in (JITFunction, InterpretedFunction)}

    def counting(original):
        def run(self, *args, grid, warmup, **kwargs):
            if not warmup:
                counter[getattr(self, "fn", self).__name__] += 1
            paused, ops.paused = ops.paused, True
            try:
                return original(self, *args, grid=grid, warmup=warmup, **kwargs)
            finally:
                ops.paused = paused
        return run

    for cls, original in originals.items():
        cls.run = counting(original)
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.run = original


def count(step):
    """{"triton": launches by kernel, "torch": computing operators by name} of calling `step()`."""
    triton = collections.Counter()
    with _Ops() as mode, _triton_launches(triton, mode):
        step()
    return {"triton": dict(triton), "torch": dict(mode.ops)}


def layer_launches(layer, x, dy):
    """count() of one training forward+backward of `layer` on x (gradients of x and the parameters)."""
    inputs = [x] + [p for p in layer.parameters() if p.requires_grad]
    return count(lambda: torch.autograd.grad(layer(x), inputs, dy))


def total(counts):
    return sum(counts["triton"].values()) + sum(counts["torch"].values())


def variant_launches(shape, device):
    """{variant: count()} of one forward+backward at `shape`, fp32 NCHW, for the harness's variants and the
    generic fused SN path (SyncSwitchNorm2d across processes) for comparison."""
    import norms
    from norms.fused import fused_norm

    from .variants import VARIANTS, resolve

    class GenericFusedSN(torch.nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.sn = norms.SwitchNorm2d(channels, impl="fused")

        def forward(self, x):
            sn = self.sn
            return fused_norm(x, sn._fused_stats, sn.bias, (sn.weight, sn.mean_weight, sn.var_weight))

    factories = {name: resolve(name)[0] for name in VARIANTS}
    factories["sn-fused-generic"] = GenericFusedSN
    x = torch.randn(shape, device=device, requires_grad=True)
    dy = torch.randn(shape, device=device)
    out = {}
    for name, factory in factories.items():
        if factory is not None:
            layer = factory(shape[1]).to(device).train()
            layer(x)  # first call: imports, compiles
            out[name] = layer_launches(layer, x, dy)
    return out


def main(argv=None):
    import argparse
    import os
    p = argparse.ArgumentParser(description="Kernel launches per norm layer forward+backward (Triton launches and "
                                "computing torch operators). Without CUDA the Triton kernels run interpreted.")
    p.add_argument("--shape", help="N,C,H,W (default: ResNet-50's first norm at 32/GPU on CUDA; 2,64,8,8 on the "
                   "CPU, where the interpreter is slow; the counts do not depend on the size)")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = tuple(int(v) for v in (args.shape or ("32,256,56,56" if device == "cuda" else "2,64,8,8")).split(","))
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before norms.kernels imports the Triton kernels
    print(f"launches per forward+backward at {shape}, fp32, NCHW, device {device}")
    for name, counts in variant_launches(shape, device).items():
        ops = ", ".join(f"{k} {v}" for k, v in sorted(counts["torch"].items()))
        print(f"  {name:18s} {total(counts):4d}  (Triton {sum(counts['triton'].values())}; torch ops: {ops or '-'})")


if __name__ == "__main__":
    main()
