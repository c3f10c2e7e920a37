"""Compile the CPU norm kernels (sn_cpu.cpp, gn_cpu.cpp, nc_passes.h) on first use into one library and load it
with ctypes; None (and why) where that cannot work.

The library is cached under $NORMS_KERNEL_CACHE (default ~/.cache/norms-kernels), named by a hash
of the sources, the compiler's version, the flags and the CPU model, so a home directory shared by
different cluster nodes never runs code built for another CPU (-march=native). Ranks compiling
at once each write their own temporary file and rename it into place. NORMS_CPU_KERNELS=0
disables the kernels (norms/backends.py then picks its table's next row).
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

SOURCES = [Path(__file__).with_name(name) for name in ("sn_cpu.cpp", "gn_cpu.cpp")]
HEADERS = [Path(__file__).with_name("nc_passes.h")]
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math",
         "-fopenmp", "-std=c++17", "-shared", "-fPIC"]

_cached = None  # (library or None, reason)


def _cpu_model():
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return os.uname().machine
    return "\n".join(dict.fromkeys(line for line in lines if line.startswith(("model name", "flags"))))


def _compiler():
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def _declare(lib):
    p, i, L, d = ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_double
    lib.sn_forward.argtypes = [p, p, i, i, L, L, L, p, p, p, p, i, p, p, L, d, p, i]
    lib.sn_forward.restype = None
    lib.sn_backward.argtypes = [p, p, p, i, i, L, L, L, p, i, i, L, p, p, p, p, p, i]
    lib.sn_backward.restype = None
    lib.gn_forward.argtypes = [p, p, i, i, L, L, L, L, p, p, d, p, i]
    lib.gn_forward.restype = None
    lib.gn_backward.argtypes = [p, p, p, i, i, L, L, L, L, p, p, p, p, i]
    lib.gn_backward.restype = None
    return lib


def build(cache_dir=None):
    """Path of the compiled library, compiling it if needed; raises RuntimeError naming the failure."""
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (set CXX, or install g++)")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    sources = [path.read_bytes() for path in SOURCES + HEADERS]
    key = hashlib.sha256(b"\0".join([*sources, version.encode(), " ".join(FLAGS).encode(),
                                     _cpu_model().encode()])).hexdigest()[:16]
    cache = Path(cache_dir or os.environ.get("NORMS_KERNEL_CACHE") or Path.home() / ".cache" / "norms-kernels")
    target = cache / f"norms_cpu-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".tmp-", suffix=".so")
    os.close(fd)
    try:
        done = subprocess.run([cxx, *FLAGS, *map(str, SOURCES), "-o", tmp], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{cxx} failed: {done.stderr.strip().splitlines()[-1:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def library():
    """(ctypes library, "") or (None, why not); built and loaded once per process, NORMS_CPU_KERNELS read each call."""
    global _cached
    if os.environ.get("NORMS_CPU_KERNELS", "1") == "0":
        return None, "disabled by NORMS_CPU_KERNELS=0"
    if _cached is None:
        try:
            _cached = (_declare(ctypes.CDLL(str(build()))), "")
        except (OSError, RuntimeError, subprocess.SubprocessError) as error:
            _cached = (None, f"compiled CPU norm kernels unavailable ({error}); using the torch-op fused path "
                             "(SN) and nn.GroupNorm (GN)")
            warnings.warn(_cached[1], RuntimeWarning, stacklevel=2)
    return _cached
