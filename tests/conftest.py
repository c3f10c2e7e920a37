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
