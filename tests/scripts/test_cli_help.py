"""Every flag of train.py, eval.py and the Python scripts in scripts/ says what it does in --help."""
import argparse
import glob
import importlib.util
import os

import pytest

from tests.engine.tiny import REPO

SCRIPTS = glob.glob(os.path.join(REPO, "scripts", "*.py"))
CLIS = ["train.py", "eval.py"] + sorted(os.path.relpath(p, REPO) for p in SCRIPTS if "add_argument" in open(p).read())


class Captured(Exception):
    """Carries the parser a CLI built, raised where it would parse its arguments."""


def parser_of(path, monkeypatch):
    def capture(self, *args, **kwargs):
        raise Captured(self)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3] + "_cli", os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(Captured) as caught:
        (getattr(module, "parse_args", None) or module.main)([])
    return caught.value.args[0]


def test_the_clis_are_found():
    wanted = {"train.py", "eval.py", "scripts/sweep.py", "scripts/export_zoo.py", "scripts/collect_results.py"}
    assert wanted <= set(CLIS)


@pytest.mark.parametrize("path", CLIS)
def test_every_flag_has_help(path, monkeypatch):
    parser = parser_of(path, monkeypatch)
    missing = [action.option_strings[0] if action.option_strings else action.dest for action in parser._actions
               if not action.help or action.help == argparse.SUPPRESS]
    assert missing == [], f"{path}: no help text for {', '.join(missing)}"
