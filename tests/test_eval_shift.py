"""eval.py under distribution shift: exact for world sizes 1 and 2, saved stream positions, one-line errors."""
import json
import os
import shutil

import pytest
import torch

from engine.stream import stream_order
from tests.engine.tiny import CLASSES, run, write_config
from tests.test_eval import script

DOMAINS = (("fog", 1), ("fog", 2), ("snow", 1), ("snow", 2))


@pytest.fixture(scope="module")
def shifted(tmp_path_factory, dataset):
    """A tiny BN model and an ImageNet-C-layout folder whose domains are brightness-shifted copies of val."""
    from PIL import Image, ImageEnhance
    tmp = tmp_path_factory.mktemp("shift")
    models = {}
    for norm in ("bn", "sn"):
        cfg = write_config(str(tmp), dataset, norm=norm, epochs=1, name=f"{norm}.yaml")
        run("train.py", ["--config", cfg, f"log.name={norm}"])
        models[norm] = str(tmp / "runs" / norm / "best.pt")
    root = tmp / "c"
    for corruption, severity in DOMAINS:
        for name in CLASSES:
            folder = root / corruption / str(severity) / name
            folder.mkdir(parents=True)
            for file in sorted(os.listdir(os.path.join(dataset, "val", name))):
                image = Image.open(os.path.join(dataset, "val", name, file)).convert("RGB")
                ImageEnhance.Brightness(image).enhance(1 + 0.4 * severity).save(folder / file)
    return {"models": models, "root": str(root), "tmp": tmp}


def shift(shifted, norm, args, nproc=0, check=True):
    base = [shifted["models"][norm], "--corruptions", shifted["root"], "--severities", "1,2",
            "--corruption-list", "fog,snow", "--json"]
    proc = run("eval.py", base + list(map(str, args)), nproc=nproc, check=check)
    return proc if not check else json.loads(proc.stdout.strip().splitlines()[-1])


def counts(record):
    return [(d["corruption"], d["severity"], d["images"], d["correct1"], d["correct5"]) for d in record["domains"]]


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize("norm, args", [("bn", ["--adapt", "source", "--batch-size", "3"]),
                                        ("sn", ["--adapt", "adabn", "--batch-size", "7"]),
                                        ("sn", ["--adapt", "tent", "--adapt-batch", "3", "--tent-switch"])])
def test_world_sizes_1_and_2_give_the_same_counts(shifted, norm, args):
    # batch and prior split their streams as source does (batch j on rank j mod world); tent here, in mode domain,
    # splits by domain
    one = shift(shifted, norm, args)
    two = shift(shifted, norm, args, nproc=2)
    assert counts(one) == counts(two)
    assert [d[:2] for d in counts(one)] == list(DOMAINS)
    assert all(d[2] == 20 for d in counts(one)) and (one["world"], two["world"]) == (1, 2)


def in_process(shifted, norm, args, capsys):
    """(exit code, stdout, stderr) of eval.py's main() in this process: its start-up would dominate the test."""
    argv = [shifted["models"][norm], "--corruptions", shifted["root"], "--severities", "1,2",
            "--corruption-list", "fog,snow"] + list(map(str, args))
    try:  # argparse's own errors exit through SystemExit
        code = script("eval.py", "eval_script").main(argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def test_methods_record_what_they_ran(shifted, tmp_path, capsys):
    out, logits = tmp_path / "r.json", tmp_path / "l.pt"
    code, printed, _ = in_process(shifted, "bn", ["--adapt", "prior", "--adapt-batch", "5", "--prior-n", "8", "--json",
                                                  "--out", out, "--save-logits", logits, "--stream-seed", "3"], capsys)
    record = json.loads(printed.strip().splitlines()[-1])
    assert code == 0
    assert json.loads(out.read_text()) == record
    assert (record["method"], record["adapt_batch"], record["prior_n"], record["stream_seed"]) == ("prior", 5, 8.0, 3)
    assert record["summary"]["mce"] is None and record["class_order"] == "verified"
    errors = [d["error"] for d in record["domains"]]
    assert record["summary"]["mean_error"] == pytest.approx(sum(errors) / len(errors))
    saved = torch.load(logits, weights_only=True)["domains"]
    for d in record["domains"]:
        part = saved[f"{d['corruption']}/{d['severity']}"]
        assert part["positions"].tolist() == list(range(20))
        assert torch.equal(part["indices"], stream_order(20, 3, f"{d['corruption']}/{d['severity']}"))
        assert part["targets"].tolist() == [part["indices"][i].item() // 5 for i in range(20)]
        assert (part["logits"].argmax(1) == part["targets"]).sum().item() == d["correct1"]
    code, printed, _ = in_process(shifted, "sn", ["--adapt", "tent", "--adapt-batch", "4", "--tent-switch", "--json"],
                                  capsys)
    tent = json.loads(printed.strip().splitlines()[-1])
    assert tent["tent"]["params"] == "affine+switch" and tent["tent"]["lr"] == pytest.approx(0.00025 * 4 / 64)


@pytest.mark.parametrize("args, message", [
    (["--adapt", "batch", "--adapt-batch", "0"], "--adapt-batch: must be >= 1, got 0"),
    (["--adapt", "batch", "--adapt-batch", "257"], "'adapt.batch' must be <= 256, got 257"),
    (["--adapt", "magic"], "invalid choice: 'magic'"),
    (["--adapt", "batch", "--prior-n", "4"], "--prior-n applies to --adapt prior, not batch"),
    (["--adapt", "adabn", "--adapt-batch", "4"], "--adapt-batch applies to --adapt batch or prior or tent"),
    (["--adapt", "tent", "--tent-switch"], "--tent-switch adapts SN's switch logits, and this model has no SN"),
    (["--adapt", "batch", "--recalibrate", "2"], "use --adapt adabn for the target data's statistics"),
    (["--severities", "1,7"], "severit"),
])
def test_bad_input_is_one_line_and_exit_2(shifted, args, message, capsys):
    code, out, err = in_process(shifted, "bn", args, capsys)
    assert code == 2, err
    assert message in err.strip().splitlines()[-1] and err.strip().splitlines()[-1].count("error") == 1
    assert out == ""


def test_missing_corruption_or_severity_folders_are_named(shifted, tmp_path, capsys):
    root = tmp_path / "c"
    shutil.copytree(shifted["root"], root)
    shutil.rmtree(root / "fog" / "2")
    for args, missing in ((["--corruption-list", "fog,frost", "--severities", "1"], "frost"),
                          (["--corruption-list", "fog", "--severities", "1,2"], os.path.join("fog", "2"))):
        code = script("eval.py", "eval_script").main([shifted["models"]["bn"], "--corruptions", str(root)] + args)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and missing in err[0]
