"""A model zoo registry entry with every field set, for the zoo and zoo-listing tests."""


def entry(**changes):
    """The entry of a tiny model of this repository, with `changes` applied."""
    base = {"name": "tiny", "source": "this repository", "config": None, "file": "tiny.safetensors",
            "sha256": "0" * 64, "top1": 50.0, "top5": 90.0, "recipe": "test", "url": None,
            "eval": "python eval.py --zoo tiny --data data/x"}
    base.update(changes)
    return base
