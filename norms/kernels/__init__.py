"""Per-(n, c) primitives of the fused norms: Triton kernels on CUDA, plain torch ops elsewhere.

`backend(x)` returns a module with nc_moments, nc_apply, nc_grad_sums and nc_grad_input, which the
generic fused path (norms/fused.py) runs. SwitchNorm2d and GroupNorm2d first try their whole-layer
kernels: `layer_kernels('triton_sn' / 'triton_gn')` where Triton runs x, `cpu.py` on the CPU. Triton is imported only on first use, and a missing Triton leaves the torch-op path working. With
TRITON_INTERPRET=1 in the environment CPU tensors run the Triton kernels in Triton's interpreter
(how CI tests them without a GPU); the variable must be set before the kernels are first imported.
"""
import importlib.util
import os

from . import eager

_triton_nc = None


_triton_found = None


def triton_available():
    global _triton_found
    if _triton_found is None:  # find_spec walks sys.path: tens of microseconds, per layer call otherwise
        _triton_found = importlib.util.find_spec("triton") is not None
    return _triton_found


def _kernels():
    global _triton_nc
    if _triton_nc is None:
        from . import triton_nc
        _triton_nc = triton_nc
    return _triton_nc


def layer_kernels(name):
    """A whole-layer Triton module ('triton_sn', 'triton_gn'), imported on first use after triton_nc."""
    _kernels()
    return importlib.import_module(f"{__name__}.{name}")


def wants_triton(x):
    """True where the Triton kernels can run x: CUDA tensors, or any tensor under TRITON_INTERPRET=1."""
    if x.numel() == 0 or not triton_available():
        return False  # an empty batch (a rank without samples) has nothing to launch
    if x.is_cuda:
        return True
    if os.environ.get("TRITON_INTERPRET") != "1":
        return False
    # kernels decorated without the interpreter (imported earlier for CUDA) cannot run CPU tensors
    return _triton_nc is None or _triton_nc.INTERPRETED


def backend(x):
    """The primitives for tensor x: Triton kernels where they can run it, otherwise the torch ops."""
    return _kernels() if wants_triton(x) else eager
