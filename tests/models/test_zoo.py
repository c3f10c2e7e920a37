"""The zoo registry: the published entries, validation errors, name resolution, file location and sha256 checks."""
import hashlib
import os
import re

import pytest
import torch
import yaml

import norms
from configs import load_config
from models import build_model, convert_released_sn, released_sn_options, zoo
from tests.models.released_sn import released_resnet
from tests.models.zoo_entries import entry

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the SN authors' model zoo (github.com/switchablenorms/Switchable-Normalization), typed here independently:
# name: (depth, variant, (gpus, samples per GPU), epochs, schedule, top-1, top-5)
PUBLISHED = {
    "resnet50_v1_sn_8x32": (50, "v1", (8, 32), 100, "step", 76.92, 93.26),
    "resnet50_v1_sn_8x32_cosine": (50, "v1", (8, 32), 120, "cosine", 77.49, 93.32),
    "resnet50_v2_sn_8x32_cosine": (50, "v2", (8, 32), 120, "cosine", 77.57, 93.65),
    "resnet101_v1_sn_8x32_cosine": (101, "v1", (8, 32), 120, "cosine", 78.54, 94.10),
    "resnet101_v2_sn_8x32_cosine": (101, "v2", (8, 32), 120, "cosine", 78.81, 94.16),
    "resnet50_v1_sn_8x4": (50, "v1", (8, 4), 100, "step", 75.85, 92.7),
    "resnet50_v1_sn_8x1": (50, "v1", (8, 1), 100, "step", 75.94, 92.7),
}


def write_registry(path, entries):
    path.write_text(yaml.safe_dump({"models": entries}, sort_keys=False))
    return str(path)


def test_registry_holds_the_authors_models_with_their_numbers():
    entries = {e["name"]: e for e in zoo.load_registry()}
    for name, (depth, variant, _, _, _, top1, top5) in PUBLISHED.items():
        e = entries[name]
        assert (e["top1"], e["top5"], e["source"], e["sha256"]) == (top1, top5, "the SN authors", None), name
        assert f"ResNet{depth}{variant}" in e["file"] and f"{top1:.2f}" in e["file"]
        assert e["url"].startswith("https://") and f"--zoo {name} " in e["eval"]


def test_configs_of_the_authors_models_match_their_recipes():
    for name, (depth, variant, (g, b), epochs, schedule, *_) in PUBLISHED.items():
        cfg = load_config(os.path.join(REPO, zoo.find(zoo.load_registry(), name)["config"]))  # a missing file fails
        assert (cfg.model.depth, cfg.model.variant, cfg.norm.type) == (depth, variant, "sn"), name
        assert (cfg.batch.gpus, cfg.batch.samples_per_gpu, cfg.train.epochs) == (g, b, epochs), name
        assert cfg.schedule.type == schedule and cfg.model.num_classes == 1000, name


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_each_authors_entry_builds_the_architecture_of_their_file(name):
    """The entry's config plus the conversion give exactly the keys and shapes of the authors' model (on meta)."""
    depth, variant, (_, b), *_ = PUBLISHED[name]
    path = os.path.join(REPO, zoo.find(zoo.load_registry(), name)["config"])
    with torch.device("meta"):
        released = released_resnet(variant, depth, 1000, using_bn=b > 1)  # (8,1): IN and LN only
        state = convert_released_sn({"module." + k: v for k, v in released.state_dict().items()})
        cfg = load_config(path)
        ours = build_model(cfg.model, norms.build_norm("sn", **released_sn_options(state)))
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}


def test_model_zoo_md_lists_every_entry():
    text = open(os.path.join(REPO, "MODEL_ZOO.md")).read()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    for e in zoo.load_registry():
        cells = rows[e["name"]]
        assert float(cells[3]) == e["top1"] and float(cells[4]) == e["top5"], e["name"]
        assert e["file"] in cells[5] and (e["sha256"] or "not published") in cells[6]
        assert e["eval"] in cells[8]
    assert len(rows) == len(zoo.load_registry())


@pytest.mark.parametrize("change, message", [
    ({"sha265": "x"}, "unknown key 'sha265'; did you mean 'sha256'?"),
    ({"top5": None, "drop": "top5"}, "missing field 'top5'"),
    ({"top1": "high"}, "'top1' must be int or float or null, got 'high'"),
    ({"sha256": "ABC"}, "'sha256' must be 64 lower-case hex digits or null"),
    ({"source": "me"}, "'source' must be one of"),
    ({"source": "the SN authors"}, "'config' may be null only for this repository's files"),
    ({"file": "../tiny.safetensors"}, "'file' must be a file name"),
    ({"eval": "python eval.py x.pt"}, "'eval' must contain '--zoo tiny'"),
    ({"top1": 150.0}, "'top1'/'top5' must be in 0..100"),
])
def test_invalid_entries_are_one_line_errors_naming_the_entry(tmp_path, change, message):
    bad = entry(**{k: v for k, v in change.items() if k != "drop"})
    bad.pop(change.get("drop"), None)
    path = write_registry(tmp_path / "zoo.yaml", [entry(name="ok", file="ok.safetensors",
                                                        eval="python eval.py --zoo ok --data d"), bad])
    with pytest.raises(zoo.ZooError) as error:
        zoo.load_registry(path)
    text = str(error.value)
    assert message in text and "entry 2 ('tiny')" in text and "\n" not in text


def test_duplicate_names_and_malformed_files(tmp_path):
    with pytest.raises(zoo.ZooError, match="entry 'tiny' appears twice"):
        zoo.load_registry(write_registry(tmp_path / "dup.yaml", [entry(), entry()]))
    (tmp_path / "list.yaml").write_text("- name: tiny\n")
    with pytest.raises(zoo.ZooError, match="one key 'models'"):
        zoo.load_registry(str(tmp_path / "list.yaml"))
    with pytest.raises(zoo.ZooError, match="registry not found"):
        zoo.load_registry(str(tmp_path / "absent.yaml"))


def test_unknown_name_lists_close_matches():
    with pytest.raises(zoo.ZooError) as error:
        zoo.find(zoo.load_registry(), "resnet50_v1_sn_8x23")
    assert "unknown zoo model 'resnet50_v1_sn_8x23'" in str(error.value)
    assert "resnet50_v1_sn_8x32" in str(error.value)


def test_missing_file_says_where_to_place_it_and_where_to_get_it(tmp_path):
    e = zoo.find(zoo.load_registry(), "resnet101_v2_sn_8x32_cosine")
    with pytest.raises(FileNotFoundError) as error:
        zoo.locate(e, str(tmp_path))
    text = str(error.value)
    assert os.path.join(str(tmp_path), "ResNet101v2+SN(8,32)-78.81.pth") in text and e["url"] in text
    assert f"place it in {tmp_path}" in text and "\n" not in text


def test_sha256_is_verified_and_a_mismatch_names_both_hashes(tmp_path):
    (tmp_path / "tiny.safetensors").write_bytes(b"the weights")
    actual = hashlib.sha256(b"the weights").hexdigest()
    expected = hashlib.sha256(b"other weights").hexdigest()
    registry = write_registry(tmp_path / "zoo.yaml", [entry(sha256=actual)])
    path, found = zoo.resolve("tiny", str(tmp_path), registry)
    assert path == str(tmp_path / "tiny.safetensors") and found["sha256"] == actual
    registry = write_registry(tmp_path / "zoo.yaml", [entry(sha256=expected)])
    with pytest.raises(zoo.ZooError) as error:
        zoo.resolve("tiny", str(tmp_path), registry)
    assert actual in str(error.value) and expected in str(error.value)


def test_no_published_hash_warns_with_the_files_hash(tmp_path):
    (tmp_path / "tiny.safetensors").write_bytes(b"unknown provenance")
    registry = write_registry(tmp_path / "zoo.yaml", [entry(sha256=None)])
    warnings = []
    zoo.resolve("tiny", str(tmp_path), registry, warn=warnings.append)
    assert len(warnings) == 1 and "no published sha256" in warnings[0]
    assert hashlib.sha256(b"unknown provenance").hexdigest() in warnings[0]


def test_zoo_folder_default(monkeypatch):
    monkeypatch.delenv("SN_ZOO_DIR", raising=False)
    assert zoo.zoo_dir() == "zoo" and zoo.zoo_dir("/x") == "/x"
    monkeypatch.setenv("SN_ZOO_DIR", "/models/sn")
    assert zoo.zoo_dir() == "/models/sn" and zoo.zoo_dir("/x") == "/x"


def test_upsert_keeps_order_and_refuses_another_hash(tmp_path):
    entries = zoo.load_registry()
    new = entry(name="mine", file="mine.safetensors", eval="python eval.py --zoo mine --data d")
    added = zoo.upsert(entries, new)
    assert [e["name"] for e in added] == [e["name"] for e in entries] + ["mine"]
    same = zoo.upsert(added, dict(new, top1=51.0))  # same hash: updated in place
    assert same[-1]["top1"] == 51.0 and len(same) == len(added)
    other = dict(new, sha256="1" * 64)
    with pytest.raises(zoo.ZooError, match="pass --force"):
        zoo.upsert(added, other)
    assert zoo.upsert(added, other, force=True)[-1]["sha256"] == "1" * 64
    path = tmp_path / "zoo.yaml"
    path.write_text(zoo.registry_text(added))
    assert zoo.load_registry(str(path)) == added and path.read_text().startswith("# The model zoo registry")
