"""eval.py on every checkpoint format, exact counts for world sizes 1 and 2, saved logits, clear errors."""
import fcntl
import hashlib
import importlib.util
import json
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision
import yaml
from safetensors.torch import load_file, save_file

from configs import load_config
from data import eval_transform
from models.checkpoints import load_file as read_verified, with_checksum
from tests.engine.tiny import CLASSES, REPO, run, write_config
from tests.faults import flip_tensor_byte, small_disk

RELEASED_RENAMES = (("bn_out.", "sn_out."), (".bn1.", ".sn1."), (".bn2.", ".sn2."), (".bn3.", ".sn3."))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset):
    tmp = tmp_path_factory.mktemp("eval")
    data = dataset
    cfg = write_config(str(tmp), data, epochs=1)
    run("train.py", ["--config", cfg])
    run_dir = tmp / "runs" / "run"
    ckpt = sorted(p for p in os.listdir(run_dir) if p.startswith("checkpoint_"))[-1]
    return {"tmp": tmp, "data": data, "cfg": cfg, "ckpt": str(run_dir / ckpt)}


def evaluate(args, nproc=0):
    proc = run("eval.py", list(args) + ["--json"], nproc=nproc)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.multiprocess
def test_world_sizes_1_and_2_count_every_image_once(trained):
    one = evaluate([trained["ckpt"], "--data", trained["data"], "--batch-size", "3"])
    two = evaluate([trained["ckpt"], "--data", trained["data"], "--batch-size", "3"], nproc=2)
    assert one["images"] == two["images"] == 20
    assert (one["correct1"], one["correct5"]) == (two["correct1"], two["correct5"])
    assert one["format"] == "repo"


@pytest.mark.multiprocess
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_recalibrate_option_runs(trained):
    result = evaluate([trained["ckpt"], "--data", trained["data"], "--recalibrate", "2"])
    assert result["images"] == 20


def fails(args):
    """stderr of an eval.py run that must refuse its input: exit 2 and one line, no traceback."""
    proc = run("eval.py", args, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


@pytest.mark.slow
def test_clear_errors(trained, tmp_path):
    assert "checkpoint not found" in fails([tmp_path / "absent.pt", "--data", trained["data"]])
    state = torch.load(trained["ckpt"], weights_only=True)["model"]
    torch.save(state, tmp_path / "sd.pth")
    message = fails([tmp_path / "sd.pth", "--data", trained["data"], "--config", trained["cfg"], "model.depth=34"])
    assert "missing key 'layer1.2." in message
    (tmp_path / "empty" / "val").mkdir(parents=True)
    assert "expected ImageFolder layout" in fails([trained["ckpt"], "--data", tmp_path / "empty"])
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert "not a readable PyTorch checkpoint" in fails([tmp_path / "junk.pt", "--data", trained["data"]])



def test_a_file_without_config_is_built_with_the_settings_rules(tmp_path):
    """A state_dict evaluated with an SN config at one sample per GPU gets the SN that training built (no BN
    branch), as the trainer's config.yaml records it."""
    eval_py = script("eval.py", "eval_cli")
    args = eval_py.parse_args([str(tmp_path / "weights.pt"), "--config",
                               os.path.join(REPO, "configs", "zoo", "resnet50_v1_sn_8x1.yaml")])
    notes = []
    cfg = eval_py.resolve_config(args, None, "state_dict", {}, notes.append)
    assert (cfg.norm.type, cfg.batch.samples_per_gpu, cfg.norm.using_bn) == ("sn", 1, False)
    assert notes == ["note: one sample per GPU: SN drops its BN branch (using_bn=False), as the paper did"]
    cfg = eval_py.resolve_config(eval_py.parse_args([str(tmp_path / "weights.pt"), "batch.samples_per_gpu=2"]),
                                 None, "state_dict", {}, notes.append)
    assert cfg.norm.using_bn and len(notes) == 1


# ----- the model zoo: scripts/export_zoo.py and eval.py --zoo

@pytest.fixture(scope="module")
def reference(trained):
    return evaluate([trained["ckpt"], "--data", trained["data"]])


def script(path, name):
    """The module of the script at `path` (from the repository root), imported in this process."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export(args, capsys):
    """(exit code, stderr) of scripts/export_zoo.py's main() run in this process (torch is loaded already)."""
    code = script("scripts/export_zoo.py", "export_zoo").main([str(a) for a in args])
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    other = read_verified(trained["ckpt"])  # without its checksum, so that it can be changed
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


@pytest.mark.slow
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


# ----- class folders that differ from training

def val_folder(trained, tmp_path, drop=(), add=()):
    """A copy of the tiny dataset whose val/ lacks the classes `drop` and has the extra classes `add`."""
    root = tmp_path / "changed"
    shutil.copytree(trained["data"], root)
    for name in drop:
        shutil.rmtree(root / "val" / name)
    for name in add:
        shutil.copytree(root / "val" / CLASSES[0], root / "val" / name)
    return str(root)


@pytest.mark.slow
def test_checkpoints_record_the_training_classes(trained):
    assert torch.load(trained["ckpt"], weights_only=True)["classes"] == list(CLASSES)


@pytest.mark.slow
def test_a_missing_class_folder_is_refused_naming_it(trained, tmp_path):
    message = fails([trained["ckpt"], "--data", val_folder(trained, tmp_path, drop=["b_green"])])
    assert "missing 'b_green'" in message and "extra" not in message


@pytest.mark.slow
def test_an_extra_class_folder_is_refused_naming_it(trained, tmp_path):
    message = fails([trained["ckpt"], "--data", val_folder(trained, tmp_path, drop=["c_blue"], add=["e_extra"])])
    assert "missing 'c_blue'" in message and "extra 'e_extra'" in message


@pytest.mark.slow
def test_classes_in_another_order_are_refused(trained, tmp_path):
    obj = read_verified(trained["ckpt"])  # without its checksum, so that it can be changed
    obj["classes"] = [CLASSES[1], CLASSES[0], *CLASSES[2:]]  # e.g. trained with a loader that orders differently
    torch.save(obj, tmp_path / "reordered.pt")
    message = fails([tmp_path / "reordered.pt", "--data", trained["data"]])
    assert "order" in message and f"label 0 is '{CLASSES[1]}'" in message and f"'{CLASSES[0]}' here" in message


@pytest.mark.slow
def test_matching_classes_are_verified(trained):
    assert evaluate([trained["ckpt"], "--data", trained["data"]])["class_order"] == "verified"
    human = run("eval.py", [trained["ckpt"], "--data", trained["data"]]).stdout
    assert "top1" in human and "not verified" not in human


def test_a_mismatch_names_a_few_classes_and_counts_the_rest():
    class_order = script("eval.py", "eval_script").class_order
    names = [f"n{i:03d}" for i in range(1000)]
    with pytest.raises(ValueError) as error:
        class_order(names, SimpleNamespace(root="val", classes=names[10:] + ["x"]), 1000)
    assert "(missing 'n000', 'n001', 'n002', 'n003', 'n004' and 5 more; extra 'x')" in str(error.value)
    assert class_order(names, SimpleNamespace(root="val", classes=list(names)), 1000) == ("verified", None)
    assert class_order(names, SimpleNamespace(), 1000)[0] == "not verified"  # synthetic data: no class folders


@pytest.mark.slow
def test_files_without_class_names_check_the_count_and_say_the_order_is_unverified(trained, tmp_path):
    obj = read_verified(trained["ckpt"])  # without its checksum, so that it can be changed
    del obj["classes"]  # written before checkpoints recorded their classes
    torch.save(obj, tmp_path / "old.pt")
    torch.save(obj["model"], tmp_path / "sd.pth")
    arch = ["--config", trained["cfg"]]
    fewer = val_folder(trained, tmp_path, drop=["b_green"])
    for args in ([tmp_path / "old.pt"], [tmp_path / "sd.pth"] + arch):
        assert evaluate(args + ["--data", trained["data"]])["class_order"] == "not verified"
        human = run("eval.py", args + ["--data", trained["data"]]).stdout
        assert "class order not verified" in human and "top1" in human
        message = fails(args + ["--data", fewer])
        assert "3 class folders" in message and "4 outputs" in message


@pytest.mark.slow
def test_zoo_files_record_the_classes(trained, registry, tmp_path, capsys):
    folder = tmp_path / "zoo"
    assert export([trained["ckpt"], "--name", "tiny_sn", "--zoo-dir", folder, "--registry", registry,
                   "--zoo-md", tmp_path / "MODEL_ZOO.md"], capsys)[0] == 0
    file = folder / "tiny_sn.safetensors"
    assert evaluate([file, "--data", trained["data"]])["class_order"] == "verified"
    assert "missing 'b_green'" in fails([file, "--data", val_folder(trained, tmp_path, drop=["b_green"])])
    plain = tmp_path / "plain.safetensors"  # no metadata: like any other file without class names
    save_file(load_file(str(file)), str(plain))
    assert evaluate([plain, "--data", trained["data"], "--config", trained["cfg"]])["class_order"] == "not verified"



@pytest.mark.slow
def test_an_export_goes_to_the_zoo_folders_registry_and_its_hint_runs_as_printed(trained, reference, tmp_path,
                                                                                   capsys, monkeypatch):
    repository = {p: open(os.path.join(REPO, p), "rb").read() for p in ("models/zoo.yaml", "MODEL_ZOO.md")}
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "my zoo"  # created by the export; the space must be quoted in the hint
    assert script("scripts/export_zoo.py", "export_zoo").main([trained["ckpt"], "--name", "tiny_sn", "--zoo-dir",
                                                                "my zoo"]) == 0
    assert {p: open(os.path.join(REPO, p), "rb").read() for p in repository} == repository
    entry = registry_entry(folder / "zoo.yaml", "tiny_sn")
    assert entry["sha256"] == hashlib.sha256((folder / "tiny_sn.safetensors").read_bytes()).hexdigest()
    assert "| `tiny_sn` |" in (folder / "MODEL_ZOO.md").read_text()
    (hint,) = [line.split("evaluate with: ", 1)[1] for line in capsys.readouterr().out.splitlines()
               if line.startswith("evaluate with: ")]
    proc = subprocess.run(hint, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, f"{hint}\n{proc.stderr}"
    assert f"top1 {reference['top1']:.2f} top5 {reference['top5']:.2f}" in proc.stdout
    assert f"published for tiny_sn: top1 {entry['top1']:.2f}" in proc.stdout


@pytest.mark.slow
def test_the_repositorys_registry_is_written_only_when_asked_for(trained, tmp_path, capsys):
    exporter = script("scripts/export_zoo.py", "export_zoo")
    plan, parse = exporter.plan, exporter.parse_args
    own = plan(parse([trained["ckpt"], "--name", "tiny_sn", "--zoo-dir", str(tmp_path)]))
    assert (own.registry, own.markdown) == (str(tmp_path / "zoo.yaml"), str(tmp_path / "MODEL_ZOO.md"))
    repo = plan(parse([trained["ckpt"], "--name", "tiny_sn", "--zoo-dir", str(tmp_path), "--repo-registry"]))
    assert (repo.registry, repo.markdown) == (os.path.join(REPO, "models", "zoo.yaml"),
                                              os.path.join(REPO, "MODEL_ZOO.md"))
    assert "--zoo-registry" not in repo.hint and "--zoo-registry" in own.hint
    with pytest.raises(SystemExit):
        parse([trained["ckpt"], "--name", "x", "--repo-registry", "--registry", str(tmp_path / "r.yaml")])
    assert "not allowed with argument" in capsys.readouterr().err


# ----- bad files and outputs

@pytest.mark.slow
def test_unreadable_safetensors_files_are_one_line_errors(trained, tmp_path):
    state = torch.load(trained["ckpt"], weights_only=True)["model"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "good.safetensors"))
    data = (tmp_path / "good.safetensors").read_bytes()
    for name, content in (("garbage", b"not a safetensors file at all"), ("truncated", data[:len(data) // 2]),
                          ("empty", b"")):
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(content)
        assert "not a readable .safetensors file" in fails([path, "--data", trained["data"]]), name


@pytest.mark.slow
def test_a_flipped_byte_in_a_checksummed_checkpoint_is_a_one_line_error(trained, tmp_path):
    path = tmp_path / "checksummed.pt"
    torch.save(with_checksum(read_verified(trained["ckpt"])), path)
    assert evaluate([path, "--data", trained["data"]])["images"] == 20  # intact: accepted
    flip_tensor_byte(path)
    assert "checksum mismatch" in fails([path, "--data", trained["data"]])


@pytest.mark.slow
def test_save_logits_into_an_unwritable_place_is_refused_before_evaluating(trained, tmp_path):
    # An empty val/ would fail the evaluation itself, so these errors show the output is checked before it.
    # Tests run as root, which a read-only chmod does not stop; /proc is a folder that root cannot create
    # files in either (and os.access says it is writable), so the check must really try to create a file.
    (tmp_path / "empty" / "val").mkdir(parents=True)
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_folder").mkdir()
    base = [trained["ckpt"], "--data", tmp_path / "empty", "--save-logits"]
    assert "cannot write in /proc" in fails(base + ["/proc/logits.pt"])
    assert "is not a folder" in fails(base + [tmp_path / "a_file" / "logits.pt"])
    assert "is a folder" in fails(base + [tmp_path / "a_folder"])
    assert "does not exist" in fails(base + [tmp_path / "absent" / "logits.pt"])
    assert list((tmp_path / "a_folder").iterdir()) == []


# ----- what eval.py says it did

@pytest.mark.slow
def test_save_logits_says_where_it_wrote(trained, tmp_path):
    out = tmp_path / "logits.pt"
    proc = run("eval.py", [trained["ckpt"], "--data", trained["data"], "--save-logits", out])
    assert proc.stderr.strip().splitlines() == [f"wrote the logits of 20 images to {out}"]
    assert torch.load(out, weights_only=True)["logits"].shape == (20, 4)


@pytest.mark.slow
def test_save_logits_onto_a_full_disk_still_prints_the_metrics_and_exits_2(trained, tmp_path):
    with small_disk(tmp_path / "disk", "64k") as disk:
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)  # fill it: an empty file can still be created
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        os.close(fd)
        proc = run("eval.py", [trained["ckpt"], "--data", trained["data"], "--save-logits", disk / "logits.pt",
                               "--json"], check=False)
        assert proc.returncode == 2
        errors = proc.stderr.strip().splitlines()
        assert len(errors) == 1 and errors[0].startswith("error: --save-logits: no space left on device writing")
        assert json.loads(proc.stdout.strip().splitlines()[-1])["images"] == 20  # the evaluation is not lost
        assert sorted(os.listdir(disk)) == ["filler"]


@pytest.mark.slow
def test_recalibrate_says_how_many_batches_it_used(trained):
    proc = run("eval.py", [trained["ckpt"], "--data", trained["data"], "--recalibrate", "1000", "--json"])
    used = json.loads(proc.stdout.strip().splitlines()[-1])["recalibrated_batches"]
    assert 0 < used < 1000
    assert proc.stderr.strip().splitlines() == \
        [f"recalibrated norm statistics on {used} training batches (1000 requested, only {used} available)"]
    proc = run("eval.py", [trained["ckpt"], "--data", trained["data"], "--recalibrate", "1"])
    assert proc.stderr.strip().splitlines() == ["recalibrated norm statistics on 1 training batch"]


def run_with_tty_stderr(args):
    """(returncode, stdout, stderr) of eval.py with stderr on a pseudo-terminal, as in an interactive shell."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24x100: a new pty has no size
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "eval.py")] + list(map(str, args)), cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    stdout = proc.communicate(timeout=300)[0]
    return proc.returncode, stdout.decode(), b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_progress_bar_on_a_terminal_only(trained):
    args = [trained["ckpt"], "--data", trained["data"], "--batch-size", "3"]
    code, stdout, stderr = run_with_tty_stderr(args)
    assert code == 0 and "top1" in stdout
    assert "eval:" in stderr and "/7 [" in stderr and "batch/s" in stderr  # 20 images in batches of 3: 7
    plain = run("eval.py", args)
    assert plain.stderr == ""  # not a terminal: logs and captured output stay clean
