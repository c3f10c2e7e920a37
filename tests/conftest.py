"""Fixtures shared across the test packages, and the rule that multi-process and Slurm tests count as slow.

Markers (registered in pyproject.toml): `slow` (more than about 2 s here), `multiprocess` (starts
torchrun or several processes), `slurm` (needs the one-node Slurm of tests/scripts/slurm_cluster.py).
`bash scripts/test.sh -m "not slow"` is the quick loop; plain `bash scripts/test.sh` runs everything.
"""
import pytest

from tests.engine.tiny import make_image_folder


def pytest_collection_modifyitems(items):
    """A test that starts several processes or needs Slurm is slow too, so `-m "not slow"` leaves it out."""
    for item in items:
        if item.get_closest_marker("multiprocess") or item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """The tiny class-coloured image folder of tests/engine/tiny.py (root/{train,val}/<class>/), made once.

    Tests only read it; one that needs to change it copies it first.
    """
    return make_image_folder(str(tmp_path_factory.mktemp("tiny_data")))


@pytest.fixture
def in_process_trainer(monkeypatch):
    """A builder of engine.trainer.Trainer(cfg, this process's world, run_dir) that keeps pytest's signal handlers."""
    import signal

    from engine.distributed import init_distributed
    from engine.trainer import Trainer

    monkeypatch.setattr(signal, "signal", lambda *a: None)

    def build(cfg, run_dir):
        return Trainer(cfg, init_distributed(), str(run_dir))

    return build
