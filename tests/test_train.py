"""train.py end to end on a tiny real image folder: torchrun, exact resume, NaN guard, bad images, emulation."""
import json
import os

import pytest
import torch

from tests.engine.tiny import assert_bitwise_equal, final_state, read_until, run, start, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def uninterrupted_dir(tmp_path_factory, dataset):
    tmp = str(tmp_path_factory.mktemp("full"))
    run("train.py", ["--config", write_config(tmp, dataset)])
    return os.path.join(tmp, "runs", "run")


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_dir):
    return final_state(uninterrupted_dir)[1]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, dataset):
    """An uninterrupted (4, 2) run on 2 processes: (stdout, run folder)."""
    tmp = tmp_path_factory.mktemp("two")
    proc = run("train.py", ["--config", write_config(str(tmp), dataset, gpus=4, b=2)], nproc=2)
    return proc.stdout, tmp / "runs" / "run"


@pytest.mark.multiprocess
def test_two_process_torchrun_run_writes_everything(dataset, two_process_run):
    stdout, run_dir = two_process_run
    assert "each process emulates 2 GPUs (stat_groups=2)" in stdout
    names = set(os.listdir(run_dir))
    assert {"config.yaml", "metrics.jsonl", "final.json", "best.pt", "tb"} <= names
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(run_dir / "tb"))
    final = json.loads((run_dir / "final.json").read_text())
    assert final["images"] == 20 and final["iterations"] == 12 and final["setting"]["stat_groups"] == 2
    assert final["status"] == "finished" and final["train_time_s"] > 0
    assert final["kernel_fallbacks"] == []  # no kernel failed its first-use self-check (norms.backends)
    weights = final["switch_weights"]["layer1.0.bn1"]
    assert abs(weights["var_in"] + weights["var_ln"] + weights["var_bn"] - 1) < 1e-5
    kinds = {json.loads(line)["kind"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()}
    assert {"train", "val", "epoch", "sn"} <= kinds
    sn = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"sn"' in line][-1]
    assert abs(sn["layer1.0.bn1/mean_in"] + sn["layer1.0.bn1/mean_ln"] + sn["layer1.0.bn1/mean_bn"] - 1) < 1e-5
    evaluated = run("eval.py", [run_dir / "checkpoint_000000012.pt", "--data", dataset, "--json"], nproc=2)
    evaluated = json.loads(evaluated.stdout.splitlines()[-1])
    assert evaluated["correct1"] == final["correct1"]
    assert evaluated["loss"] == pytest.approx(final["loss"], rel=1e-6)  # the checkpoint holds what was evaluated
    train = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert all(k in train[0] for k in ("loss", "lr", "top1", "images_per_s", "data_wait_fraction"))


@pytest.mark.multiprocess
def test_two_process_resume_after_an_off_schedule_checkpoint_is_bitwise_exact(tmp_path, dataset, two_process_run):
    """Running statistics included: the checkpoint written at a stop must not change the trajectory."""
    cfg = write_config(str(tmp_path), dataset, gpus=4, b=2)
    run("train.py", ["--config", cfg, "train.max_iters=3"], nproc=2)
    _, stopped = final_state(tmp_path / "runs" / "run")
    assert len(stopped["rank_buffers"]) == 2
    assert any(not torch.equal(stopped["rank_buffers"][0][k], stopped["rank_buffers"][1][k])
               for k in stopped["rank_buffers"][0])  # per-GPU statistics really differ between the ranks
    run("train.py", ["--config", cfg], nproc=2)
    assert_bitwise_equal(final_state(tmp_path / "runs" / "run")[1], final_state(two_process_run[1])[1])
    resumed, full = (json.loads((d / "final.json").read_text())
                     for d in (tmp_path / "runs" / "run", two_process_run[1]))
    assert (resumed["loss"], resumed["correct1"]) == (full["loss"], full["correct1"])


@pytest.mark.parametrize("epoch", [1, 2], ids=["first_epoch", "last_epoch"])
def test_stop_at_an_epochs_end_validates_after_resume_as_an_uninterrupted_run(tmp_path, dataset, uninterrupted_dir,
                                                                              in_process_trainer, epoch):
    """The stop request arrives during the epoch's last step (simulated in-process); the rest is a real rerun."""
    import signal

    from configs import load_config
    cfg = write_config(str(tmp_path), dataset)
    run_dir = tmp_path / "runs" / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the subprocesses (OMP_NUM_THREADS=1), so the runs are bitwise comparable
    try:
        trainer = in_process_trainer(load_config(cfg), run_dir)
        original = trainer.train_epoch

        def epoch_then_signal():
            done = original()
            if trainer.epoch == epoch:
                trainer._on_signal(signal.SIGTERM)
            return done
        trainer.train_epoch = epoch_then_signal
        assert trainer.fit() is None and trainer.stop_reason == "signal"
    finally:
        torch.set_num_threads(threads)
    assert not any('"val"' in line for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                   if json.loads(line)["step"] == 6 * epoch)
    run("train.py", ["--config", cfg])
    full = os.path.join(uninterrupted_dir)
    best, best_full = (torch.load(os.path.join(d, "best.pt"), weights_only=True) for d in (run_dir, full))
    assert best["global_step"] == best_full["global_step"]
    assert_bitwise_equal(best, best_full)
    final, final_full = (json.loads(open(os.path.join(d, "final.json")).read()) for d in (run_dir, full))
    final.pop("train_time_s"), final_full.pop("train_time_s")
    assert final == final_full
    vals = [(r["step"], r["top1"], r["loss"])
            for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "val"]
    assert vals == [(r["step"], r["top1"], r["loss"])
                    for r in map(json.loads, open(os.path.join(full, "metrics.jsonl"))) if r["kind"] == "val"]


@pytest.mark.parametrize("stop_at", [3, 6], ids=["mid_epoch", "epoch_boundary"])
def test_resume_is_bitwise_exact(tmp_path, dataset, uninterrupted, stop_at):
    cfg = write_config(str(tmp_path), dataset)
    first = run("train.py", ["--config", cfg, f"train.max_iters={stop_at}"])
    assert f"stopped at iteration {stop_at}" in first.stdout
    second = run("train.py", ["--config", cfg])
    assert "resumed from" in second.stdout and f"iteration {stop_at}" in second.stdout
    assert_bitwise_equal(final_state(tmp_path / "runs" / "run")[1], uninterrupted)


def test_auto_resume_skips_corrupt_newest_checkpoint(tmp_path, dataset, uninterrupted):
    cfg = write_config(str(tmp_path), dataset)
    run("train.py", ["--config", cfg, "train.max_iters=3", "checkpoint.every_iters=1"])
    run_dir = tmp_path / "runs" / "run"
    newest = run_dir / "checkpoint_000000003.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    proc = run("train.py", ["--config", cfg])
    assert "skipping unreadable checkpoint" in proc.stdout + proc.stderr
    assert "checkpoint_000000002.pt" in proc.stdout
    assert_bitwise_equal(final_state(run_dir)[1], uninterrupted)


@pytest.mark.multiprocess
@pytest.mark.parametrize("overrides",
                         [["checkpoint.every_iters=1"], ["checkpoint.every_iters=0", "log.print_every=100"]],
                         ids=["read_at_once_every_step", "read_one_step_later"])
def test_nan_guard_stops_all_ranks_and_keeps_last_good_checkpoint(tmp_path, dataset, overrides):
    cfg = write_config(str(tmp_path), dataset, gpus=4, b=2)
    proc = run("train.py", ["--config", cfg, "optim.lr=1e30", "schedule.warmup_epochs=0", *overrides],
               nproc=2, check=False)
    assert proc.returncode != 0
    assert "non-finite" in proc.stderr and "iteration" in proc.stderr
    assert "rank 0" in proc.stderr and "rank 1" in proc.stderr
    run_dir = tmp_path / "runs" / "run"
    for name in [n for n in os.listdir(run_dir) if n.endswith(".pt")]:  # no checkpoint ever holds the bad update
        state = torch.load(run_dir / name, weights_only=True)
        assert all(t.isfinite().all() for t in state["model"].values() if t.is_floating_point()), name
    final = json.loads((tmp_path / "runs" / "run" / "final.json").read_text())  # the cell reports what happened
    assert final["status"] == "diverged" and "non-finite" in final["error"]


def test_unreadable_images_are_named_counted_and_limited(tmp_path, dataset):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    (data / "train" / "a_red" / "broken.png").write_bytes(b"not an image")
    cfg = write_config(str(tmp_path), str(data), epochs=1)
    ok = run("train.py", ["--config", cfg])
    assert "unreadable image" in ok.stdout and "broken.png" in ok.stdout
    (data / "train" / "b_green" / "broken2.png").write_bytes(b"\x89PNG truncated")
    failed = run("train.py", ["--config", cfg, "data.max_bad_images=1", "checkpoint.resume=none",
                              "log.name=limited"], check=False)
    assert failed.returncode == 1 and "exceed data.max_bad_images=1" in failed.stderr


@pytest.mark.multiprocess
def test_emulated_setting_equals_true_multiprocess_statistics(tmp_path, dataset):
    """(4, 2) on 2 processes x 2 virtual GPUs == on 1 process x 4 virtual GPUs; (2, 4) differs."""
    runs = {}
    for name, nproc, gpus, b in (("two_procs", 2, 4, 2), ("one_proc", 0, 4, 2), ("other_setting", 0, 2, 4)):
        cfg = write_config(str(tmp_path), dataset, gpus=gpus, b=b, epochs=1, name=f"{name}.yaml")
        run("train.py", ["--config", cfg, "model.dropout=0", f"log.name={name}"], nproc=nproc)
        runs[name] = final_state(tmp_path / "runs" / name)[1]["model"]
    for key, value in runs["two_procs"].items():
        if value.is_floating_point():
            torch.testing.assert_close(value, runs["one_proc"][key], rtol=1e-4, atol=1e-5, msg=key)
    diff = max((runs["other_setting"][k] - v).abs().max().item() for k, v in runs["one_proc"].items()
               if v.is_floating_point())
    assert diff > 1e-3


def test_one_sample_per_gpu_drops_the_bn_branch_and_bf16_channels_last_run(tmp_path, dataset):
    cfg = write_config(str(tmp_path), dataset, gpus=4, b=1, epochs=1)
    proc = run("train.py", ["--config", cfg, "train.precision=bf16", "train.channels_last=true", "train.max_iters=2"])
    assert "SN drops its BN branch (using_bn=False)" in proc.stdout
    _, state = final_state(tmp_path / "runs" / "run")
    assert state["model"]["layer1.0.bn1.mean_weight"].shape == (2,)
    assert not any(k.endswith("running_mean") for k in state["model"])


def test_fp16_with_grad_scaler_and_compiled_model(tmp_path, dataset):
    cfg = write_config(str(tmp_path), dataset, epochs=1)
    run("train.py", ["--config", cfg, "train.precision=fp16", "train.max_iters=2", "log.name=fp16"])
    _, state = final_state(tmp_path / "runs" / "fp16")
    assert state["scaler"] is not None and state["scaler"]["scale"] > 0
    run("train.py", ["--config", cfg, "train.compile=true", "train.max_iters=1", "log.name=compiled"])  # ~70 s
    _, state = final_state(tmp_path / "runs" / "compiled")
    assert not any("_orig_mod" in k or k.startswith("module.") for k in state["model"])


def test_batch_average_mode_recalibrates_before_evaluation(tmp_path, dataset):
    cfg = write_config(str(tmp_path), dataset, epochs=1)
    proc = run("train.py", ["--config", cfg, "norm.using_moving_average=false", "train.recalibrate_batches=3"])
    assert "recalibrated norm statistics on 3 batches" in proc.stdout
    run_dir = tmp_path / "runs" / "run"
    _, state = final_state(run_dir)
    assert not torch.equal(state["model"]["bn1.running_var"], torch.ones_like(state["model"]["bn1.running_var"]))
    final = json.loads((run_dir / "final.json").read_text())
    evaluated = json.loads(run("eval.py", [run_dir / "checkpoint_000000006.pt", "--data", dataset, "--json"])
                           .stdout.splitlines()[-1])
    assert evaluated["loss"] == pytest.approx(final["loss"], rel=1e-6)


def test_one_sample_per_gpu_checkpoint_evaluates(tmp_path, dataset):
    cfg = write_config(str(tmp_path), dataset, gpus=4, b=1, epochs=1)
    run("train.py", ["--config", cfg, "train.max_iters=2"])
    run_dir = tmp_path / "runs" / "run"
    assert "using_bn: false" in (run_dir / "config.yaml").read_text()
    evaluated = run("eval.py", [run_dir / "checkpoint_000000002.pt", "--data", dataset, "--json"])
    assert json.loads(evaluated.stdout.splitlines()[-1])["images"] == 20


def test_checkpoint_files_keep_old_runs_safe_and_are_readable(tmp_path, dataset):
    cfg = write_config(str(tmp_path), dataset, epochs=1)
    run("train.py", ["--config", cfg])
    run_dir = tmp_path / "runs" / "run"
    assert (os.stat(run_dir / "checkpoint_000000006.pt").st_mode & 0o044) == 0o044  # group/other readable
    again = run("train.py", ["--config", cfg, f"checkpoint.resume={run_dir / 'checkpoint_000000006.pt'}",
                             "train.epochs=2", "train.max_iters=8"])
    assert "resuming with a changed config: train.epochs, train.max_iters" in again.stdout
    older = run_dir / "checkpoint_000000006.pt"
    refused = run("train.py", ["--config", cfg, f"checkpoint.resume={older}", "train.epochs=2"], check=False)
    assert refused.returncode == 2 and "already holds checkpoints past iteration 6" in refused.stderr


def test_command_line_errors(tmp_path, dataset):
    cfg = write_config(str(tmp_path), dataset)
    bad_key = run("train.py", ["--config", cfg, "optim.lrr=0.1"], check=False)
    assert bad_key.returncode == 2 and "unknown config key 'optim.lrr'; did you mean 'optim.lr'?" in bad_key.stderr
    missing = run("train.py", ["--config", str(tmp_path / "nope.yaml")], check=False)
    assert missing.returncode == 2 and "config file not found" in missing.stderr
    no_data = run("train.py", ["--config", cfg, f"data.root={tmp_path / 'absent'}"], check=False)
    assert no_data.returncode == 2 and "absent" in no_data.stderr and len(no_data.stderr.strip().splitlines()) == 1
    bad_value = run("train.py", ["--config", cfg, "optim.lr=["], check=False)
    assert bad_value.returncode == 2 and "not valid YAML" in bad_value.stderr
    import shutil
    shutil.copytree(dataset, tmp_path / "mismatch")
    shutil.rmtree(tmp_path / "mismatch" / "val" / "d_gray")
    mismatch = run("train.py", ["--config", cfg, f"data.root={tmp_path / 'mismatch'}"], check=False)
    assert mismatch.returncode == 2 and "different classes (e.g. 'd_gray')" in mismatch.stderr
    dry = run("train.py", ["--config", cfg, "--dry-run", "--world", "2"])
    assert "setting (4, 2) on 2 process(es): total batch 8, 4 samples per process" in dry.stdout
    assert "stat_groups=2" in dry.stdout and "lr 0.015625" in dry.stdout


def _signal_after_first_step(proc, sig):
    lines = read_until(proc, " iter 1 ")
    proc.send_signal(sig)
    lines += proc.stdout.readlines()
    return proc.wait(timeout=120), "".join(lines)


def test_sigusr1_checkpoints_exits_143_and_resume_is_exact(tmp_path, dataset, uninterrupted):
    import signal
    cfg = write_config(str(tmp_path), dataset)
    code, out = _signal_after_first_step(start(["--config", cfg]), signal.SIGUSR1)
    assert code == 143, out
    assert "stopping on signal SIGUSR1: checkpoint written at iteration" in out
    run_dir = tmp_path / "runs" / "run"
    assert not (run_dir / "final.json").exists()
    step = final_state(run_dir)[1]["global_step"]
    assert 1 <= step < 12
    second = run("train.py", ["--config", cfg])
    assert f"iteration {step}" in second.stdout and "resumed from" in second.stdout
    assert_bitwise_equal(final_state(run_dir)[1], uninterrupted)
    assert json.loads((run_dir / "final.json").read_text())["status"] == "finished"


@pytest.mark.multiprocess
def test_sigterm_to_torchrun_reaches_every_rank_and_the_run_resumes(tmp_path, dataset):
    import signal
    cfg = write_config(str(tmp_path), dataset, epochs=3)
    code, out = _signal_after_first_step(start(["--config", cfg], nproc=2), signal.SIGTERM)
    assert code != 0, out
    assert "stopping on signal SIGTERM: checkpoint written at iteration" in out
    run_dir = tmp_path / "runs" / "run"
    step = final_state(run_dir)[1]["global_step"]
    assert not (run_dir / "final.json").exists() and 1 <= step < 18
    second = run("train.py", ["--config", cfg], nproc=2)
    assert "resumed from" in second.stdout and f"iteration {step}" in second.stdout
    final = json.loads((run_dir / "final.json").read_text())
    assert final["status"] == "finished" and final["iterations"] == 18


def test_signal_in_an_epochs_last_steps_skips_validation_and_checkpoints(tmp_path, dataset, in_process_trainer):
    """In-process Trainer; the signal's arrival right at an epoch's end is simulated by wrapping train_epoch."""
    import signal

    from configs import load_config
    cfg = load_config(write_config(str(tmp_path), dataset, epochs=2))
    run_dir = str(tmp_path / "runs" / "run")
    os.makedirs(run_dir)
    (tmp_path / "runs" / "run" / ".tmp-killedwrite").write_bytes(b"partial")
    trainer = in_process_trainer(cfg, run_dir)
    assert not (tmp_path / "runs" / "run" / ".tmp-killedwrite").exists()  # a killed write's leftovers go
    original = trainer.train_epoch

    def epoch_then_signal():
        done = original()
        trainer._on_signal(signal.SIGUSR1, None)
        return done
    trainer.train_epoch = epoch_then_signal
    assert trainer.fit() is None and trainer.stop_reason == "signal"
    metrics = (tmp_path / "runs" / "run" / "metrics.jsonl").read_text()
    kinds = [json.loads(line)["kind"] for line in metrics.splitlines()]
    assert "val" not in kinds
    name, state = final_state(tmp_path / "runs" / "run")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 0, 6)
