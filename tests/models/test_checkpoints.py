"""Reading checkpoint files: the training classes they record, unreadable .safetensors files, zoo metadata."""
import json

import pytest
import torch
from safetensors.torch import save, save_file

from models import load_checkpoint, read_checkpoint, zoo

CLASSES = ["n01440764", "n01443537", "n01484850"]
CONFIG = {"model": {"depth": 18}, "data": {"root": "data/x"}}


def tiny_state():
    return {k: v.clone() for k, v in torch.nn.Linear(4, 3).state_dict().items()}


def test_repo_checkpoints_give_their_classes(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"model": tiny_state(), "config": CONFIG, "classes": CLASSES}, path)
    ckpt = load_checkpoint(path)
    assert (ckpt.kind, ckpt.config, ckpt.classes) == ("repo", CONFIG, CLASSES)
    assert read_checkpoint(path)[1:] == (CONFIG, "repo")  # the three-field form is unchanged
    for name, obj in (("synthetic", {"model": tiny_state(), "config": CONFIG, "classes": None}),
                      ("old", {"model": tiny_state(), "config": CONFIG}),  # written before classes were recorded
                      ("plain", tiny_state())):
        torch.save(obj, tmp_path / f"{name}.pt")
        assert load_checkpoint(tmp_path / f"{name}.pt").classes is None, name


@pytest.mark.parametrize("classes", [[0, 1, 2], "abc", ["a", "b", "a"]])
def test_malformed_classes_are_a_one_line_error(tmp_path, classes):
    torch.save({"model": tiny_state(), "config": CONFIG, "classes": classes}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="'classes' must be a list of distinct class names") as error:
        load_checkpoint(tmp_path / "bad.pt")
    assert str(tmp_path / "bad.pt") in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty"])
def test_unreadable_safetensors_are_one_line_value_errors(tmp_path, kind):
    good = save(tiny_state(), metadata=zoo.export_metadata(CONFIG, CLASSES))
    content = {"garbage": b"\x08\x00\x00\x00\x00\x00\x00\x00{nonsense", "truncated": good[:len(good) - 7],
               "empty": b""}[kind]
    path = tmp_path / f"{kind}.safetensors"
    path.write_bytes(content)
    for read in (read_checkpoint, zoo.embedded):
        with pytest.raises(ValueError) as error:
            read(path)
        text = str(error.value)
        assert f"{path}: not a readable .safetensors file" in text and "\n" not in text, read.__name__


def test_export_metadata_round_trips_and_gives_the_same_bytes(tmp_path):
    metadata = zoo.export_metadata(CONFIG, CLASSES)
    # safetensors writes several metadata keys in a random order, so one key keeps the export's hash stable
    assert len(metadata) == 1
    state = tiny_state()
    files = {save(state, metadata=zoo.export_metadata(CONFIG, CLASSES)) for _ in range(20)}
    assert len(files) == 1
    path = tmp_path / "zoo.safetensors"
    path.write_bytes(files.pop())
    assert zoo.embedded(path) == (CONFIG, CLASSES)
    assert load_checkpoint(path).kind == "safetensors"


def test_zoo_files_without_classes(tmp_path):
    save_file(tiny_state(), str(tmp_path / "older.safetensors"), metadata={"config": json.dumps(CONFIG)})
    assert zoo.embedded(tmp_path / "older.safetensors") == (CONFIG, None)  # exported before classes were recorded
    save_file(tiny_state(), str(tmp_path / "plain.safetensors"))
    assert zoo.embedded(tmp_path / "plain.safetensors") == (None, None)
    path = tmp_path / "synthetic.safetensors"
    save_file(tiny_state(), str(path), metadata=zoo.export_metadata(CONFIG, None))  # trained on synthetic data
    assert zoo.embedded(path) == (CONFIG, None)
    assert zoo.embedded(tmp_path / "x.pt") == (None, None)  # not a .safetensors file: no metadata
