"""eval.py on every checkpoint format, exact counts for world sizes 1 and 2, saved logits, clear errors."""
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from safetensors.torch import load_file, save_file

from data import eval_transform
from configs import load_config
from tests.engine.tiny import REPO, make_image_folder, run, write_config

RELEASED_RENAMES = (("bn_out.", "sn_out."), (".bn1.", ".sn1."), (".bn2.", ".sn2."), (".bn3.", ".sn3."))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    data = make_image_folder(str(tmp / "data"))
    cfg = write_config(str(tmp), data, epochs=1)
    run("train.py", ["--config", cfg])
    run_dir = tmp / "runs" / "run"
    ckpt = sorted(p for p in os.listdir(run_dir) if p.startswith("checkpoint_"))[-1]
    return {"tmp": tmp, "data": data, "cfg": cfg, "ckpt": str(run_dir / ckpt)}


def evaluate(args, nproc=0):
    proc = run("eval.py", list(args) + ["--json"], nproc=nproc)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_world_sizes_1_and_2_count_every_image_once(trained):
    one = evaluate([trained["ckpt"], "--data", trained["data"], "--batch-size", "3"])
    two = evaluate([trained["ckpt"], "--data", trained["data"], "--batch-size", "3"], nproc=2)
    assert one["images"] == two["images"] == 20
    assert (one["correct1"], one["correct5"]) == (two["correct1"], two["correct5"])
    assert one["format"] == "repo"


def test_saved_logits_are_in_dataset_order(trained, tmp_path):
    out = tmp_path / "logits.pt"
    summary = evaluate([trained["ckpt"], "--data", trained["data"], "--save-logits", out], nproc=2)
    saved = torch.load(out, weights_only=True)
    assert saved["indices"].tolist() == list(range(20))
    assert saved["targets"].tolist() == [i // 5 for i in range(20)]
    assert (saved["logits"].argmax(1) == saved["targets"]).sum().item() == summary["correct1"]


def _released_format(state):
    out = {}
    for key, value in state.items():
        for ours, theirs in RELEASED_RENAMES:
            key = key.replace(ours, theirs)
        key = "sn1." + key[4:] if key.startswith("bn1.") else key
        if ".sn" in f".{key}" or key.startswith("sn") or ".downsample.1." in key:
            leaf = key.rsplit(".", 1)[1]
            if leaf in ("weight", "bias"):
                value = value.reshape(1, -1, 1, 1)
            elif leaf in ("running_mean", "running_var"):
                value = value.reshape(1, -1, 1)
        out["module." + key] = value
    return {"state_dict": out, "epoch": 100}


def test_every_checkpoint_format_gives_the_same_result(trained, tmp_path):
    reference = evaluate([trained["ckpt"], "--data", trained["data"]])
    state = torch.load(trained["ckpt"], weights_only=True)["model"]
    arch = ["--config", trained["cfg"]]
    files = {"module": {"state_dict": {"module." + k: v for k, v in state.items()}},
             "compiled": {"_orig_mod." + k: v for k, v in state.items()},
             "released": _released_format(state)}
    for name, obj in files.items():
        torch.save(obj, tmp_path / f"{name}.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "weights.safetensors"))
    for name, kind in (("module.pth", "state_dict"), ("compiled.pth", "state_dict"),
                       ("released.pth", "released"), ("weights.safetensors", "safetensors")):
        result = evaluate([tmp_path / name, "--data", trained["data"]] + arch)
        assert result["format"] == kind
        assert (result["correct1"], result["correct5"], result["images"]) == \
               (reference["correct1"], reference["correct5"], reference["images"]), name
        assert result["loss"] == pytest.approx(reference["loss"], rel=1e-5)


def test_torchvision_checkpoint_matches_torchvision_logits(trained, tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(num_classes=4).eval()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    out = tmp_path / "logits.pt"
    evaluate([tmp_path / "tv.pth", "--data", trained["data"], "--save-logits", out, "model.depth=18",
              "model.num_classes=4", "data.val_resize=12", "data.val_crop=12", "data.workers=0"])
    cfg = load_config(None, ["data.val_resize=12", "data.val_crop=12"])
    folder = torchvision.datasets.ImageFolder(os.path.join(trained["data"], "val"), eval_transform(cfg.data))
    with torch.no_grad():
        expected = tv(torch.stack([folder[i][0] for i in range(len(folder))]))
    torch.testing.assert_close(torch.load(out, weights_only=True)["logits"], expected, rtol=1e-4, atol=1e-4)


def test_recalibrate_option_runs(trained):
    result = evaluate([trained["ckpt"], "--data", trained["data"], "--recalibrate", "2"])
    assert result["images"] == 20


def test_clear_errors(trained, tmp_path):
    def fails(args):
        proc = run("eval.py", args, check=False)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        return proc.stderr
    assert "checkpoint not found" in fails([tmp_path / "absent.pt", "--data", trained["data"]])
    state = torch.load(trained["ckpt"], weights_only=True)["model"]
    torch.save(state, tmp_path / "sd.pth")
    message = fails([tmp_path / "sd.pth", "--data", trained["data"], "--config", trained["cfg"], "model.depth=34"])
    assert "missing key 'layer1.2." in message
    (tmp_path / "empty" / "val").mkdir(parents=True)
    assert "expected ImageFolder layout" in fails([trained["ckpt"], "--data", tmp_path / "empty"])
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert "not a readable PyTorch checkpoint" in fails([tmp_path / "junk.pt", "--data", trained["data"]])


# ----- the model zoo: scripts/export_zoo.py and eval.py --zoo

@pytest.fixture(scope="module")
def reference(trained):
    return evaluate([trained["ckpt"], "--data", trained["data"]])


def export(args, capsys):
    """(exit code, stderr) of scripts/export_zoo.py's main() run in this process (torch is loaded already)."""
    spec = importlib.util.spec_from_file_location("export_zoo", os.path.join(REPO, "scripts", "export_zoo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main([str(a) for a in args])
    return code, capsys.readouterr().err


def zoo_args(name, registry, folder):
    return ["--zoo", name, "--zoo-registry", registry, "--zoo-dir", folder]


def registry_entry(registry, name):
    return next(e for e in yaml.safe_load(registry.read_text())["models"] if e["name"] == name)


@pytest.fixture
def registry(tmp_path):
    """A copy of the repository's registry and MODEL_ZOO.md, so exports leave the real ones alone."""
    path = tmp_path / "zoo.yaml"
    path.write_text(open(os.path.join(REPO, "models", "zoo.yaml")).read())
    (tmp_path / "MODEL_ZOO.md").write_text(open(os.path.join(REPO, "MODEL_ZOO.md")).read())
    return path


def test_zoo_export_then_eval_equals_the_checkpoint(trained, reference, registry, tmp_path, capsys):
    folder, md = tmp_path / "zoo", tmp_path / "MODEL_ZOO.md"
    args = [trained["ckpt"], "--name", "tiny_sn", "--zoo-dir", folder, "--registry", registry, "--zoo-md", md]
    assert export(args, capsys)[0] == 0
    entry = registry_entry(registry, "tiny_sn")
    file = folder / "tiny_sn.safetensors"
    assert entry["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    final = json.loads((Path(trained["ckpt"]).parent / "final.json").read_text())
    assert (entry["top1"], entry["top5"]) == (final["top1"], final["top5"])  # the exported checkpoint is the last
    assert f"`{entry['sha256']}`" in md.read_text() and "| `tiny_sn` |" in md.read_text()
    saved = torch.load(trained["ckpt"], weights_only=True)["model"]
    exported = load_file(str(file))
    assert set(exported) == set(saved) and all(torch.equal(exported[k], saved[k]) for k in saved)
    assert export(args, capsys)[0] == 0  # exporting again gives the same bytes, so the entry is accepted
    assert hashlib.sha256(file.read_bytes()).hexdigest() == entry["sha256"]
    result = evaluate(zoo_args("tiny_sn", registry, folder) + ["--data", trained["data"]])
    assert (result["correct1"], result["correct5"], result["images"]) == \
           (reference["correct1"], reference["correct5"], reference["images"])
    assert result["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    assert (result["zoo"], result["published_top1"]) == ("tiny_sn", final["top1"])
    alone = evaluate([file, "--data", trained["data"]])  # the file carries its config: no --config needed
    assert (alone["correct1"], alone["format"]) == (reference["correct1"], "safetensors")


def test_zoo_refuses_a_changed_file_and_a_different_export(trained, registry, tmp_path, capsys):
    folder, md = tmp_path / "zoo", tmp_path / "MODEL_ZOO.md"
    assert export([trained["ckpt"], "--name", "tiny_sn", "--zoo-dir", folder, "--registry", registry,
                   "--zoo-md", md], capsys)[0] == 0
    file = folder / "tiny_sn.safetensors"
    published = hashlib.sha256(file.read_bytes()).hexdigest()
    file.write_bytes(file.read_bytes() + b" ")
    proc = run("eval.py", zoo_args("tiny_sn", registry, folder) + ["--data", trained["data"]], check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert published in proc.stderr and hashlib.sha256(file.read_bytes()).hexdigest() in proc.stderr
    other = torch.load(trained["ckpt"], weights_only=True)
    other["model"]["fc.bias"] += 1.0
    (tmp_path / "other").mkdir()
    torch.save(other, tmp_path / "other" / "best.pt")
    args = [tmp_path / "other" / "best.pt", "--name", "tiny_sn", "--zoo-dir", tmp_path / "zoo2", "--registry",
            registry, "--zoo-md", md]
    code, err = export(args, capsys)
    assert code == 2 and "pass --force" in err and published in err and len(err.strip().splitlines()) == 1
    assert registry_entry(registry, "tiny_sn")["sha256"] == published
    code, err = export(args + ["--force"], capsys)
    assert code == 0 and "no top-1/top-5 recorded" in err  # no final.json beside it
    entry = registry_entry(registry, "tiny_sn")
    assert entry["sha256"] == hashlib.sha256((tmp_path / "zoo2" / "tiny_sn.safetensors").read_bytes()).hexdigest()
    assert entry["top1"] is None
    code, err = export([trained["cfg"], "--name", "x", "--registry", registry, "--zoo-md", md], capsys)
    assert code == 2 and "not a readable PyTorch checkpoint" in err


def test_zoo_authors_file_without_published_hash(trained, reference, tmp_path):
    folder = tmp_path / "zoo"
    folder.mkdir()
    state = torch.load(trained["ckpt"], weights_only=True)["model"]
    torch.save(_released_format(state), folder / "Tiny+SN(4,2)-40.00.pth")
    registry = tmp_path / "zoo.yaml"
    registry.write_text(yaml.safe_dump({"models": [{
        "name": "tiny_released", "source": "the SN authors", "config": trained["cfg"],
        "file": "Tiny+SN(4,2)-40.00.pth", "sha256": None, "top1": 40.0, "top5": 100.0, "recipe": "tiny",
        "url": "https://example.org/tiny", "eval": "python eval.py --zoo tiny_released --data d"}]}))
    proc = run("eval.py", zoo_args("tiny_released", registry, folder) + ["--data", trained["data"], "--json"])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["format"] == "released" and result["correct1"] == reference["correct1"]
    assert result["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    digest = hashlib.sha256((folder / "Tiny+SN(4,2)-40.00.pth").read_bytes()).hexdigest()
    assert "no published sha256" in proc.stderr and digest in proc.stderr
