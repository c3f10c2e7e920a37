"""Config files and overrides that must be refused, each with one line naming the problem and the fix."""
import os

import pytest

from configs import ConfigError, load_config


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def refused(path, overrides=()):
    """The one-line message load_config raises for `path` with `overrides`."""
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "{}\n"],
                         ids=["empty", "blank", "comment", "mapping"])
def test_a_config_file_without_settings_is_refused(tmp_path, text):
    path = write(tmp_path, "empty.yaml", text)
    message = refused(path)
    assert message.startswith(f"{path}: the config file is empty") and "base:" in message and "model:" in message


@pytest.mark.parametrize("text,where", [("", ": the config file is empty"), ("model: [\n", ":2:1: not valid YAML: ")],
                         ids=["empty", "syntax"])
def test_a_bad_base_file_is_named_with_the_file_that_included_it(tmp_path, text, where):
    write(tmp_path, "parent.yaml", text)
    child = write(tmp_path, "child.yaml", "base: parent.yaml\nmodel: {depth: 18}\n")
    message = refused(child)
    assert message.startswith(f"{tmp_path / 'parent.yaml'}{where}") and f"(the base: of {child})" in message


def test_a_file_holding_only_a_base_inherits_everything(tmp_path):
    write(tmp_path, "parent.yaml", "model: {depth: 18}\n")
    assert load_config(write(tmp_path, "child.yaml", "base: parent.yaml\n")).model.depth == 18


def test_no_path_still_means_the_schema_defaults():
    cfg = load_config(None, ["model.depth=18"])
    assert (cfg.model.depth, cfg.norm.type, cfg.optim.lr) == (18, "bn", 0.1)


@pytest.mark.parametrize("override", ["optim.lr=.inf", "optim.lr=inf", "optim.lr=.nan", "optim.lr=NaN",
                                      "optim.lr=1e400", "optim.lr=1.0e400", "schedule.min_lr=-.inf",
                                      "norm.momentum=.nan", "optim.weight_decay=.inf", "schedule.warmup_epochs=.inf"])
def test_non_finite_floats_are_refused(override):
    key = override.split("=")[0]
    assert refused(None, [override]).startswith(f"'{key}' must be a finite number, got ")


def test_non_finite_floats_in_a_file_are_refused(tmp_path):
    path = write(tmp_path, "inf.yaml", "optim: {lr: .inf}\n")
    assert refused(path) == "'optim.lr' must be a finite number, got inf"


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = write(tmp_path, "bad.yaml", "model:\n  depth: 18\noptim: {lr: 0.1\nnorm: {type: sn}\n")
    message = refused(path)
    assert message.startswith(f"{path}:") and "not valid YAML" in message
    line = int(message[len(f"{path}:"):].split(":")[0])
    assert line in (3, 4, 5)  # yaml reports the unclosed brace where it gives up: lines are 1-based, not 0-based
    tab = write(tmp_path, "tab.yaml", "model:\n\tdepth: 18\n")
    assert refused(tab).startswith(f"{tab}:2:")


def test_unreadable_bytes_are_a_one_line_error(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"model: {depth: 18}\n\xff\xfe\x00")
    assert str(path) in refused(path)


def test_a_missing_base_file_names_the_file_that_included_it(tmp_path):
    child = write(tmp_path, "child.yaml", "base: parent.yaml\n")
    assert refused(child) == f"config file not found: {tmp_path / 'parent.yaml'} (the base: of {child})"
    write(tmp_path, "top.yaml", "base: child.yaml\n")
    assert refused(tmp_path / "top.yaml") == f"config file not found: {tmp_path / 'parent.yaml'} (the base: of {child})"


@pytest.mark.parametrize("text", ["base:\n", "base: ''\n", "base: [a.yaml]\n"], ids=["null", "blank", "list"])
def test_a_base_that_names_no_file_is_refused(tmp_path, text):
    path = write(tmp_path, "child.yaml", text + "model: {depth: 18}\n")
    assert refused(path).startswith(f"{path}: 'base' must be a path to another config, got ")


def test_a_folder_given_as_config_is_named_as_a_folder(tmp_path):
    assert refused(tmp_path) == f"{tmp_path} is a folder, not a config file; name the YAML file in it"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_config_file_is_a_one_line_error(tmp_path):
    path = write(tmp_path, "secret.yaml", "model: {depth: 18}\n")
    path.chmod(0)
    assert refused(path) == f"cannot read config file {path}: Permission denied"


def test_a_missing_config_file_keeps_its_message(tmp_path):
    assert refused(tmp_path / "nope.yaml") == f"config file not found: {tmp_path / 'nope.yaml'}"


def test_a_duplicate_key_is_refused_with_its_line(tmp_path):
    path = write(tmp_path, "dup.yaml", "optim: {lr: 0.4}\nmodel: {depth: 18}\noptim: {momentum: 0.5}\n")
    message = refused(path)
    assert message.startswith(f"{path}:3:") and "duplicate key 'optim'" in message
    nested = write(tmp_path, "nested.yaml", "optim:\n  lr: 0.4\n  lr: 0.2\n")
    assert refused(nested).startswith(f"{nested}:3:") and "duplicate key 'lr'" in refused(nested)


def test_yaml_merge_keys_still_work(tmp_path):
    path = write(tmp_path, "merge.yaml", "model: &m {depth: 18, width: 8}\nnorm: {type: gn, groups: 8}\n"
                                        "x: &o {lr: 0.2}\noptim: {<<: *o, lr: 0.3}\n")
    with pytest.raises(ConfigError, match="unknown config key 'x'"):
        load_config(path)  # the merge itself parsed; only the helper key is unknown


@pytest.mark.parametrize("text,message", [
    ("model:\n", "'model' must be a section (mapping), got None"),
    ("model: [18]\n", "'model' must be a section (mapping), got [18]"),
    ("train: {epochs: -3}\n", "'train.epochs' must be > 0, got -3"),
    ("batch: {samples_per_gpu: 0}\n", "'batch.samples_per_gpu' must be > 0, got 0"),
    ("train: {compile: 'true'}\n", "'train.compile' must be bool, got str 'true'"),
    ("train: {compile: 1}\n", "'train.compile' must be bool, got int 1"),
    ("train: {epochs: 2.5}\n", "'train.epochs' must be int, got float 2.5"),
    ("model: {depth: 50.0}\n", "'model.depth' must be one of 18, 34, 50, 101, 152, got 50.0"),
    ("checkpoint: {resume: ''}\n", "'checkpoint.resume' must be auto, none or a checkpoint path"),
])
def test_other_bad_values_are_refused(tmp_path, text, message):
    assert message in refused(write(tmp_path, "bad.yaml", text))
