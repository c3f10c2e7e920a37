"""The resume check and the collector's replicate test classify config keys from one list (configs/keys.py): a key
the collector ignores is one a resume may change, and every key a resume may change outside the schedule is one
the collector ignores."""
import dataclasses

import pytest

from configs import Config, to_dict
from engine.resume import check_config_change
from engine.run_folder import RunFolderError
from results.recipe import PLACED, SEED, flatten, recipe

KEYS = sorted(flatten(dataclasses.asdict(Config())))
SCHEDULE = {"train.epochs", "train.eval_every", "train.recalibrate_batches"}  # typed from docs/training.md


def changed(key):
    """The default config dict with `key` set to a value no key has by default."""
    config = to_dict(Config())
    section, name = key.split(".")
    config[section] = {**config[section], name: "changed"}
    return config


def resume_allows(key):
    try:
        check_config_change(to_dict(Config()), changed(key), "RUN")
        return True
    except RunFolderError:
        return False


def recipe_ignores(key):
    return recipe(changed(key)) == recipe(to_dict(Config()))


@pytest.mark.parametrize("key", [k for k in KEYS if k not in PLACED | {SEED}])
def test_the_collector_ignores_exactly_what_a_resume_may_change_outside_the_schedule(key):
    assert recipe_ignores(key) == (resume_allows(key) and key not in SCHEDULE)


def test_the_schedule_may_change_on_resume_but_defines_the_recipe():
    for key in SCHEDULE:
        assert resume_allows(key) and not recipe_ignores(key)


def test_some_keys_of_each_kind():
    assert {k for k in KEYS if recipe_ignores(k)} >= {"log.name", "checkpoint.resume", "data.workers", "norm.impl",
                                                       "train.compile", "train.max_iters", "data.max_bad_images"}
    assert not any(resume_allows(k) for k in ("optim.lr", "norm.momentum", "train.seed", "train.precision"))
