"""The fused norms' kernels: compiled CPU kernels, Triton kernels, and the per-(n, c) primitives.

`ops` registers the whole-layer kernels (cpu.py, triton_sn.py, triton_gn.py) as torch.library
operators; norms/backends.py chooses among them. `backend(x)` returns the module of per-(n, c)
primitives (nc_moments, nc_apply, nc_grad_sums, nc_grad_input) that the generic fused path
(norms/fused.py) runs: the Triton ones (triton_nc.py) where Triton runs x, else plain torch ops
(eager.py). Triton is imported only on first use, and a missing Triton leaves the torch-op path
working. With TRITON_INTERPRET=1 in the environment CPU tensors run the Triton kernels in Triton's
interpreter (how CI tests them without a GPU); the variable must be set before the kernels are
first imported.
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


def interpreted():
    """True where CPU tensors can run the Triton kernels: TRITON_INTERPRET=1, and the kernels (if already
    imported) were decorated for the interpreter."""
    if os.environ.get("TRITON_INTERPRET") != "1" or not triton_available():
        return False
    return _triton_nc is None or _triton_nc.INTERPRETED


def wants_triton(x):
    """True where the Triton kernels can run x: non-empty CUDA tensors, or any under the interpreter."""
    if x.numel() == 0 or not triton_available():
        return False  # an empty batch (a rank without samples) has nothing to launch
    return x.is_cuda or interpreted()


def backend(x):
    """The per-(n, c) primitives for tensor x: Triton kernels where they can run it, otherwise the torch ops."""
    return _kernels() if wants_triton(x) else eager
