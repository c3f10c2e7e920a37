"""Which implementation runs a SwitchNorm2d or GroupNorm2d forward: one table, resolved once per kind of input.

A layer's forward is `backends.forward(self, x)`. The choice depends on the layer kind ('sn':
SwitchNorm2d, SyncSwitchNorm2d; 'gn': GroupNorm2d for gn, in, ln), its `impl`, where x runs, x's dtype
and memory layout, whether the BN branch is this process's batch alone, and whether torch.compile
is tracing; it is cached under exactly that key, so a forward costs one dictionary look-up. Under
torch.compile the choice is a constant of the trace (`torch.compiler.assume_constant_result`), and
the whole-layer kernels are torch.library operators (norms/kernels/ops.py) that stay in the graph.

The first time a process would run the Triton kernels of a layer kind on a CUDA device for some
dtype and layout, `norms.selfcheck` compares them with the reference on a small random input; if
they disagree the kind falls back to the reference for the rest of the process, with one warning,
and `fallbacks()` records it (the trainer writes it into final.json).
"""
import os
import time
import warnings

import torch

BACKENDS = ("cpu_kernels", "triton", "fused_torch", "reference")
ANY = None
KERNEL_DTYPES = (torch.float32, torch.bfloat16)  # what the compiled CPU kernels read
DENSE = ("nchw", "channels_last")

# First matching row wins; a row whose backend cannot run the input is passed over ('cpu_kernels'
# needs the built library and float32 parameters). where: 'triton' when Triton runs x (a non-empty
# CUDA tensor with Triton installed, or any non-empty tensor under TRITON_INTERPRET=1), else x's
# device type. 'fused_torch' is norms/fused.py with the per-(n, c) primitives of norms.kernels.backend(x).
#        kind  where     dtypes         layouts  BN local  impl='auto'    impl='fused'
TABLE = [("sn", "triton", ANY,           ANY,     True,     "triton",      "triton"),
         ("sn", "triton", ANY,           ANY,     False,    "fused_torch", "fused_torch"),
         ("sn", "cpu",    KERNEL_DTYPES, DENSE,   True,     "cpu_kernels", "cpu_kernels"),
         ("sn", "cpu",    ANY,           ANY,     ANY,      "fused_torch", "fused_torch"),
         ("sn", ANY,      ANY,           ANY,     ANY,      "reference",   "fused_torch"),
         ("gn", "triton", ANY,           ANY,     ANY,      "triton",      "triton"),
         ("gn", "cpu",    KERNEL_DTYPES, DENSE,   ANY,      "cpu_kernels", "cpu_kernels"),
         ("gn", ANY,      ANY,           ANY,     ANY,      "reference",   "fused_torch")]
# Then, in this order: impl='reference' is always 'reference'; under torch.compile 'fused_torch' becomes
# 'reference' (its backward runs Python callbacks and torch.autograd.grad, which the compiler cannot
# trace, and the compiler fuses the reference itself); a kind whose self-check failed is 'reference'.

LAYER_NAMES = {"sn": "SwitchNorm2d", "gn": "GroupNorm2d"}
SELF_CHECKED = {("triton", "cuda")}  # (backend, device type) pairs checked against the reference on first use

_cache = {}
_checked = {}  # (kind, backend, device, dtype, layout) -> error or None
_failed = set()  # kinds switched to the reference
_records = []  # every self-check: dict(layer, backend, device, dtype, layout, error, seconds)


def layout(x):
    """'empty' (no elements), 'nchw', 'channels_last' or 'other' (neither dense layout)."""
    if x.numel() == 0:
        return "empty"
    if x.is_contiguous():
        return "nchw"
    return "channels_last" if x.is_contiguous(memory_format=torch.channels_last) else "other"


def forward(layer, x):
    """layer(x) by the implementation `choose` picks."""
    backend = choose(layer, x)
    if backend == "reference":
        return layer._forward_reference(x)
    if backend == "fused_torch":
        return layer._forward_fused(x)
    return layer._forward_kernels(x, backend)


def choose(layer, x):
    """The backend (one of BACKENDS) that runs layer(x)."""
    weight = layer.weight
    return _resolve(layer.kind, layer.impl, x.device.type, x.dtype, layout(x), layer._bn_is_local(),
                    None if weight is None else weight.dtype, torch.compiler.is_compiling())


def _resolve(kind, impl, device, dtype, shape_layout, bn_local, param_dtype, compiling):
    env = (os.environ.get("TRITON_INTERPRET"), os.environ.get("NORMS_CPU_KERNELS"))
    key = (kind, impl, device, dtype, shape_layout, bn_local, param_dtype, compiling, env)
    backend = _cache.get(key)
    if backend is None:
        backend = decide(kind, impl, device, dtype, shape_layout, bn_local, param_dtype, compiling)
        if (backend, device) in SELF_CHECKED and not _self_check(kind, backend, device, dtype, shape_layout):
            backend = "reference"
        _cache[key] = backend
    return backend


# torch.compiler.assume_constant_result(_resolve), without the import of torch._dynamo (and Triton) it does
_resolve._dynamo_marked_constant = True


def _where(device, shape_layout):
    from . import kernels
    if shape_layout == "empty" or not kernels.triton_available():
        return device
    return "triton" if device == "cuda" or kernels.interpreted() else device


def _runs(backend, dtype, param_dtype):
    if backend != "cpu_kernels":
        return True
    from .kernels import cpu
    return cpu.runs(dtype, param_dtype) and cpu.available()[0]


def decide(kind, impl, device, dtype, shape_layout, bn_local=True, param_dtype=torch.float32, compiling=False):
    """The backend the table and its rules give this key (a failed self-check included, a pending one not)."""
    if impl == "reference" or kind in _failed:
        return "reference"
    where = _where(device, shape_layout)
    for row_kind, row_where, dtypes, layouts, local, auto, fused in TABLE:
        if row_kind != kind or row_where not in (ANY, where) or (dtypes is not ANY and dtype not in dtypes):
            continue
        if (layouts is not ANY and shape_layout not in layouts) or (local is not ANY and local != bn_local):
            continue
        backend = fused if impl == "fused" else auto
        if _runs(backend, dtype, param_dtype):
            break
    else:
        backend = "reference"
    return "reference" if compiling and backend == "fused_torch" else backend


def _self_check(kind, backend, device, dtype, shape_layout):
    """True when the kernels agree with the reference for this key (checked once per process)."""
    key = (kind, backend, device, dtype, shape_layout)
    if key not in _checked:
        from . import selfcheck
        start = time.perf_counter()
        error = selfcheck.check(kind, backend, device, dtype, shape_layout)
        seconds = time.perf_counter() - start
        _checked[key] = error
        name = LAYER_NAMES[kind]
        _records.append(dict(layer=name, backend=backend, device=device, dtype=str(dtype).replace("torch.", ""),
                             layout=shape_layout, error=error, seconds=round(seconds, 4)))
        if error is not None:
            _failed.add(kind)
            _cache.clear()  # every cached choice for this kind is now the reference
            warnings.warn(f"{name}: the {backend} kernels disagree with the reference on {device} for "
                          f"{_records[-1]['dtype']} {shape_layout} input ({error}); {name} layers use the "
                          "reference implementation for the rest of this process", RuntimeWarning, stacklevel=2)
    return _checked[key] is None


def table_markdown():
    """TABLE as the Markdown table of docs/kernels.md."""
    def cell(value):
        if value is ANY:
            return "any"
        if isinstance(value, tuple):
            return ", ".join(str(v).replace("torch.", "") for v in value)
        return {True: "yes", False: "no"}.get(value, str(value))

    lines = ["| layer | where | dtypes | layouts | BN branch local | impl='auto' | impl='fused' |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for kind, *row in TABLE:
        lines.append("| " + " | ".join([LAYER_NAMES[kind], *(cell(v) for v in row[:4]),
                                         *(f"`{v}`" for v in row[4:])]) + " |")
    return "\n".join(lines)


def fallbacks():
    """The self-checks that failed in this process (layer, backend, device, dtype, layout, error, seconds)."""
    return [dict(r) for r in _records if r["error"] is not None]


def self_checks():
    """Every self-check this process ran, passed or failed, with its duration in seconds."""
    return [dict(r) for r in _records]


def reset():
    """Forget every cached choice, self-check and fallback (tests, and after changing SELF_CHECKED)."""
    _cache.clear()
    _checked.clear()
    _failed.clear()
    _records.clear()
