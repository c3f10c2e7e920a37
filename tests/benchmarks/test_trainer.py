"""--what trainer: the arithmetic (rates, medians, ratios, round order), the programs' settings, and one quick run."""
import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchmarks import trainer as tb
from benchmarks.cli import main, parser, settings
from configs import load_config
from tests.benchmarks.quick import run_quick


def setup(**changes):
    values = dict(device="cpu", world=2, batch=32, steps=200, warmup=20, data="folder", images=12800, size=32,
                  depth=18, width=64, precision="fp32", workers=1, threads=1)
    return tb.Setup(**{**values, **changes})


# ----- arithmetic ----------------------------------------------------------------------------------------
def test_steady_rate_counts_the_images_between_the_window_ends():
    times = {20: 100.0, 40: 101.0, 200: 109.0}
    rate = tb.steady_rate(times, 20, 200, 64)
    assert rate == {"images_per_s": 180 * 64 / 9.0, "first_step": 20, "last_step": 200}


def test_steady_rate_takes_the_first_step_at_or_after_start_and_the_last_at_or_before_end():
    times = {1: 0.0, 21: 2.0, 41: 4.0, 181: 18.0, 200: 20.0, 220: 30.0}  # timm logs steps 1, 21, ... and the last
    rate = tb.steady_rate(times, 20, 200, 10)
    assert (rate["first_step"], rate["last_step"]) == (21, 200)
    assert rate["images_per_s"] == pytest.approx(179 * 10 / 18.0)


@pytest.mark.parametrize("times", [{}, {20: 1.0}, {5: 1.0, 20: 2.0}, {20: 3.0, 200: 3.0}])
def test_steady_rate_needs_two_distinct_timestamps_in_the_window(times):
    with pytest.raises(ValueError, match="two timestamped steps"):
        tb.steady_rate(times, 20, 200, 64)


def test_round_order_alternates_two_programs_and_rotates_three():
    assert [tb.round_order(["trainer", "plain"], r) for r in range(3)] == [
        ["trainer", "plain"], ["plain", "trainer"], ["trainer", "plain"]]
    names = ["trainer", "plain", "timm"]
    orders = [tb.round_order(names, r) for r in range(3)]
    assert orders == [names, ["plain", "timm", "trainer"], ["timm", "trainer", "plain"]]
    for position in range(3):  # over len(names) rounds, every program runs at every position once
        assert sorted(o[position] for o in orders) == sorted(names)


def test_summarize_reports_medians_and_ratios_of_medians_to_the_plain_loop():
    out = tb.summarize({"trainer": [300.0, 310.0, 280.0], "plain": [320.0, 330.0, 100.0], "timm": [160.0, 170.0,
                                                                                                  150.0]})
    assert out["trainer"]["images_per_s"] == 300.0 and out["plain"]["images_per_s"] == 320.0
    assert out["trainer"]["rounds"] == [300.0, 310.0, 280.0]
    assert out["trainer"]["ratio_to_plain"] == 300.0 / 320.0 and out["timm"]["ratio_to_plain"] == 0.5
    assert out["trainer"]["ratio_to_plain_per_round"] == [300.0 / 320.0, 310.0 / 330.0, 280.0 / 100.0]
    assert out["trainer"]["ratio_to_plain_per_round_median"] == 310.0 / 330.0
    assert out["timm"]["ratio_to_plain_per_round_median"] == 170.0 / 330.0
    assert not [key for key in out["plain"] if key.startswith("ratio")]


def test_trainer_times_reads_the_train_rows_of_metrics_jsonl(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"kind": "train", "step": 20, "time": 5.0, "loss": 1.0}, {"kind": "epoch", "step": 30, "time": 6.0},
            {"kind": "train", "step": 40, "time": 7.5}, {"kind": "val", "step": 40, "time": 9.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert tb.trainer_times(path) == {20: 5.0, 40: 7.5}


def test_timm_times_numbers_steps_across_epochs():
    lines = [(1.0, "Train: 0 [   0/100 (  1%)]  Loss: 2.3 ..."), (2.0, "Test: [   0/2]  Time: 0.08"),
             (3.0, "Train: 0 [  20/100 ( 21%)]  Loss: 2.2"), (4.0, "Train: 1 [   0/100 (  1%)]"),
             (5.0, "Train: 1 [  99/100 (100%)]"), (6.0, "Scheduled epochs: 2")]
    assert tb.timm_times(lines) == {1: 1.0, 21: 3.0, 101: 4.0, 200: 5.0}


# ----- the programs' settings ----------------------------------------------------------------------------
def test_timestamps_fall_on_both_ends_of_the_window():
    assert setup().every == 20 and setup(warmup=30, steps=200).every == 10 and setup(warmup=2, steps=6).every == 2


def test_trainer_config_is_the_plain_loops_run(tmp_path):
    s = setup()
    cfg_dict = tb.trainer_config(s, str(tmp_path), str(tmp_path))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg_dict))
    cfg = load_config(str(path))  # the schema accepts it
    assert cfg.optim.lr * cfg.batch.gpus * cfg.batch.samples_per_gpu / 256 == pytest.approx(s.lr)
    assert (cfg.batch.gpus, cfg.batch.samples_per_gpu) == (2, 32)
    assert (cfg.model.depth, cfg.model.width, cfg.model.small_stem, cfg.norm.type) == (18, 64, False, "bn")
    assert (cfg.data.train_crop, cfg.data.val_resize, cfg.data.val_crop, cfg.data.workers) == (32, 32, 32, 1)
    assert cfg.train.max_iters == 200 and cfg.log.print_every == 20 and not cfg.data.synthetic
    # nothing but training inside the window: no validation, no epoch checkpoint, no lr step before the stop
    per_epoch = tb.steps_per_epoch(s)
    assert per_epoch == 200
    assert cfg.train.epochs * per_epoch > s.steps and cfg.train.eval_every == cfg.train.epochs
    assert cfg.checkpoint.every_epochs == 0 and cfg.checkpoint.every_iters == 0
    assert cfg.schedule.milestones[0] * per_epoch > s.steps and cfg.schedule.warmup_epochs == 0
    assert cfg.checkpoint.resume == "none"


def test_synthetic_epochs_are_data_loaders_length():
    s = setup(data="synthetic")
    from data.loaders import SYNTHETIC_TRAIN
    assert tb.steps_per_epoch(s) == SYNTHETIC_TRAIN // 64
    cfg = tb.trainer_config(s, None, "out")
    assert cfg["data"]["synthetic"] and cfg["train"]["epochs"] * tb.steps_per_epoch(s) > s.steps
    assert "synthetic" in tb.plain_argv(s, None, "t.json")


def test_plain_and_timm_command_lines_carry_the_setting():
    s = setup(precision="bf16")
    plain = tb.plain_argv(s, "/data", "/out/t.json")
    assert plain[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert plain[5].endswith(os.path.join("benchmarks", "plain_loop.py"))
    flags = dict(zip(plain[6::2], plain[7::2]))
    assert flags == {"--data": "/data", "--out": "/out/t.json", "--depth": "18", "--width": "64",
                     "--num-classes": str(tb.CLASSES), "--norm": "bn", "--crop": "32", "--batch": "32",
                     "--lr": "0.1", "--workers": "1", "--precision": "bf16", "--steps": "200",
                     "--record-every": "20"}
    timm = tb.timm_argv(s, "/timm/train.py", "/data", "/out")
    assert timm[5:7] == ["/timm/train.py", "/data"]
    text = " ".join(timm)
    for part in ("--model resnet18", "-b 32", "--lr 0.1", "--opt momentum", "--weight-decay 1e-4", "--epochs 1",
                 "--sched constant", "--log-interval 20", "--workers 1", "--device cpu", "--amp-dtype bfloat16",
                 "--input-size 3 32 32", "--smoothing 0", "--color-jitter 0"):
        assert part in text, part
    with pytest.raises(ValueError, match="folder"):
        tb.timm_argv(setup(data="synthetic"), "/timm/train.py", None, "/out")


def test_png_folder_is_deterministic_and_reused(tmp_path):
    root = tb.png_folder(str(tmp_path / "a"), 30, 8, progress=lambda m: None)
    again = tb.png_folder(str(tmp_path / "a"), 30, 8, progress=lambda m: pytest.fail("regenerated"))
    other = tb.png_folder(str(tmp_path / "b"), 30, 8, progress=lambda m: None)
    assert root == again
    files = sorted(p.relative_to(root) for p in Path(root).rglob("*.png"))
    assert len(files) == 30 + tb.CLASSES * tb.VAL_PER_CLASS
    assert len({f.parts[1] for f in files if f.parts[0] == "train"}) == tb.CLASSES
    assert all((Path(root) / f).read_bytes() == (Path(other) / f).read_bytes() for f in files)
    assert not [p for p in (tmp_path / "a").iterdir() if ".tmp-" in p.name]


def test_run_lines_timestamps_lines_as_they_arrive_and_kills_at_the_timeout(tmp_path):
    code, lines = tb.run_lines([sys.executable, "-c", "import time; print('a', flush=True); time.sleep(0.3); "
                                "print('b')"], dict(os.environ), tmp_path, timeout=60)
    assert code == 0 and [t for _, t in lines] == ["a", "b"] and lines[1][0] - lines[0][0] >= 0.25
    start = time.monotonic()
    code, lines = tb.run_lines([sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), tmp_path,
                               timeout=1)
    assert code != 0 and lines[-1][1] == "killed after 1 s" and time.monotonic() - start < 30


def test_cpu_defaults_are_the_issues_reference_run():
    s = settings(parser().parse_args(["--device", "cpu", "--what", "trainer"])).trainer_setup
    assert (s.world, s.batch, s.steps, s.warmup, s.every, s.data, s.images, s.size) == (
        2, 32, 200, 20, 20, "folder", 12800, 32)
    assert (s.depth, s.width, s.norm, s.precision, s.workers, s.threads, s.lr) == (18, 64, "bn", "fp32", 1, 1, 0.1)
    assert tb.steps_per_epoch(s) == 200  # one epoch, the timed window's end
    changed = settings(parser().parse_args(["--device", "cpu", "--what", "trainer", "--trainer-world", "1",
                                            "--trainer-steps", "100", "--trainer-data", "synthetic"])).trainer_setup
    assert (changed.world, changed.steps, changed.images, changed.data) == (1, 100, 3200, "synthetic")


@pytest.mark.parametrize("argv, message", [
    (["--trainer-steps", "20"], "--trainer-steps (20) must exceed --trainer-warmup (20)"),
    (["--trainer-world", "0"], "--trainer-world must be >= 1"),
    (["--trainer-images", "63"], "do not fill one step"),
    (["--timm-train", "/nonexistent/train.py"], "no such file"),
    (["--timm-train", __file__, "--trainer-data", "synthetic"], "needs --trainer-data folder"),
])
def test_bad_trainer_settings(argv, capsys, message):
    assert main(["--device", "cpu", "--what", "trainer"] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


# ----- end to end ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_quick_run_times_both_programs(tmp_path):
    proc, data = run_quick(tmp_path, "trainer")
    assert {"environment", "settings", "trainer"} <= set(data) and "layers" not in data
    section = data["trainer"]
    s = section["setup"]
    assert (s["world"], s["steps"], s["warmup"], s["data"], s["images"]) == (2, 6, 2, "folder", 48)
    assert section["steps_per_epoch"] == 6 and section["notes"] == []
    assert section["order"] == [["trainer", "plain"]] and section["rounds"] == 1
    programs = section["programs"]
    assert set(programs) == {"trainer", "plain"}
    assert programs["trainer"]["ratio_to_plain"] == pytest.approx(
        programs["trainer"]["images_per_s"] / programs["plain"]["images_per_s"])
    assert programs["trainer"]["ratio_to_plain_per_round"] == [programs["trainer"]["ratio_to_plain"]]
    by_program = {r["program"]: r for r in section["runs"]}
    assert by_program["trainer"]["argv"][5].endswith("train.py")
    assert by_program["plain"]["argv"][5].endswith("plain_loop.py")
    for name, run in by_program.items():
        # timestamps from the program itself: metrics.jsonl rows of train.py, the plain loop's JSON
        assert sorted(map(int, run["times"])) == [2, 4, 6], name
        assert (run["first_step"], run["last_step"]) == (2, 6)
        assert run["images_per_s"] == pytest.approx(4 * 8 / (run["times"]["6"] - run["times"]["2"]))
        assert programs[name]["images_per_s"] == run["images_per_s"] > 0
    assert os.path.isdir(section["data_root"]) and section["data_root"].startswith(str(tmp_path / "cache"))
    assert "Trainer vs a plain loop" in proc.stdout and "benchmarks/plain_loop.py" in proc.stdout
