"""eval.py on every checkpoint format, exact counts for world sizes 1 and 2, saved logits, clear errors."""
import json
import os

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from data import eval_transform
from configs import load_config
from tests.engine.tiny import make_image_folder, run, write_config

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
