"""Fixtures of tests/norms: the compiled CPU kernels built (or a skip), the Triton primitives interpreted."""
import importlib

import pytest

from tests.norms.helpers import ON_GPU


@pytest.fixture
def compiled_kernels(monkeypatch):
    """The kernels must build wherever a C++ compiler exists; without one the tests say so and skip."""
    from norms.kernels import cpu_build

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("NORMS_CPU_KERNELS", raising=False)
    if cpu_build._compiler() is None:
        pytest.skip("no C++ compiler (c++/g++ or $CXX): the compiled CPU kernels cannot be built here")
    lib, why = cpu_build.library()
    assert lib is not None, why


@pytest.fixture
def tk(monkeypatch):
    """norms.kernels.triton_nc, imported with TRITON_INTERPRET=1 unless a GPU runs the kernels for real."""
    pytest.importorskip("triton", reason="triton is not installed, so the Triton kernels cannot be tested")
    if not ON_GPU:
        monkeypatch.setenv("TRITON_INTERPRET", "1")  # read when the kernels are decorated, at first import
    module = importlib.import_module("norms.kernels.triton_nc")
    if not ON_GPU and not module.INTERPRETED:
        pytest.skip("norms.kernels.triton_nc was imported without TRITON_INTERPRET=1; run this file on its own")
    return module


@pytest.fixture
def small_tiles(tk, monkeypatch):
    """Tile limits small enough that the small test shapes walk several tiles and merge several l-splits."""
    monkeypatch.setattr(tk, "_TILE", 16)
    monkeypatch.setattr(tk, "_MAX_BLOCK_L", 8)
    monkeypatch.setattr(tk, "_MAX_BLOCK_C", 4)
    monkeypatch.setattr(tk, "_programs_wanted", lambda device: 8)
