"""The trainer: one class whose methods are the steps of training, driven by a validated Config."""
import dataclasses
import inspect
import math
import os
import resource
import time

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import norms
from configs import to_dict
from data import build_eval_loader, build_train_loader
from models import build_model, load_strict

from . import checkpoint as ckpt, run_folder
from .distributed import StepFlags, all_gather_objects, all_reduce_sum, broadcast_object
from .evaluate import evaluate
from .logger import RunLogger
from .optim import build_optimizer
from .precision import autocast
from .resume import check_config_change, check_training_checkpoint, local_buffers, restore_buffers
from .run_folder import RunFolderError, RunLock
from .schedule import lr_at
from .setting import effective_setting, norm_factory
from .state import capture_rng, restore_rng, seed_everything
from .stop import AGENT_DIED, StopWatch


class Trainer:
    """Builds everything from `cfg` and the distributed environment `env`, then `fit()` trains."""

    def __init__(self, cfg, env, run_dir):
        cfg, self.setting, notes = effective_setting(cfg, env.world)
        self.cfg, self.env, self.run_dir = cfg, env, run_dir
        self.lock = self._lock_run_folder()  # before anything in the folder is read or written
        self.log = RunLogger(run_dir, env.is_main, cfg.log.tensorboard)
        for line in [self.setting.describe()] + notes:
            self.log.info(line)
        self._set_determinism()
        seed_everything(cfg.train.seed + env.rank)
        self.model = self._build_model()
        self.optimizer = build_optimizer(self.model, cfg.optim, self.setting.lr)
        self.scaler = torch.amp.GradScaler(env.device.type) if cfg.train.precision == "fp16" else None
        self.train_loader = build_train_loader(cfg.data, self.setting.per_process, env.rank, env.world,
                                               cfg.train.seed, num_classes=cfg.model.num_classes)
        self.val_loader = build_eval_loader(cfg.data, self.setting.per_process, env.rank, env.world,
                                            num_classes=cfg.model.num_classes)
        _check_same_classes(self.train_loader.dataset, self.val_loader.dataset)
        self.steps_per_epoch = self.train_loader.sampler.batches_per_epoch
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.best_top1 = -1.0
        self.bad_images = 0
        self.epoch_end_pending = False  # the epoch has ended but its validation/checkpoint work has not run
        self._in_flight = None          # StepFlags of the newest step, not yet read
        self._stop_agreed = False       # a settled step carried a stop request from some rank
        self._meter = _fresh_meter()    # the metrics of the steps settled since the last print
        self._saved = None              # (global_step, epoch_end_pending) of the newest checkpoint written
        self._recal_loader = None
        self.stop = StopWatch()         # signals and agent death, acted upon at the next step by all ranks
        self.stop.install()
        self.stop_reason = None         # why fit() returned before the last epoch: "max_iters" or "signal"
        self._start_time = time.perf_counter()
        own_buffers = self._resume()  # before DDP, so every rank starts from the same loaded state
        self.net = self.model
        if env.active:
            self.net = DistributedDataParallel(self.model, device_ids=[env.device.index] if env.device.type == "cuda"
                                               else None, **_rank_local_buffers())
        if own_buffers:  # after DDP, which broadcasts rank 0's buffers at construction
            restore_buffers(self.model, own_buffers)
        if cfg.train.compile:
            self.net = torch.compile(self.net)
        if env.is_main:
            run_folder.write_config(run_dir, to_dict(cfg))

    def _lock_run_folder(self):
        """Rank 0 takes the folder's lock; every rank raises the same one-line error if it cannot."""
        lock, error = None, None
        if self.env.is_main:
            try:
                lock = RunLock(self.run_dir)
            except RunFolderError as e:
                error = str(e)
        error = broadcast_object(error)
        if error:
            raise RunFolderError(error)
        return lock

    # ----- set-up -------------------------------------------------------------------------------
    def _set_determinism(self):
        deterministic = self.cfg.train.deterministic
        torch.backends.cudnn.benchmark = not deterministic
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=False)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

    def _build_model(self):
        model = build_model(self.cfg.model, norm_factory(self.cfg, self.setting)).to(self.env.device)
        if self.cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _autocast(self):
        return autocast(self.cfg.train.precision, self.env.device.type)

    # ----- checkpoints --------------------------------------------------------------------------
    def _state(self, model_state, rank_buffers):
        return {"model": model_state, "rank_buffers": rank_buffers, "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                "best_top1": self.best_top1, "bad_images": self.bad_images, "world": self.env.world,
                "epoch_end_pending": self.epoch_end_pending,
                "rng": all_gather_objects(capture_rng()), "config": to_dict(self.cfg),
                "classes": getattr(self.train_loader.dataset, "classes", None)}

    def save(self, best=False):
        """All ranks: gather RNG states and running statistics; rank 0 writes the checkpoint atomically.

        The model state holds the running statistics averaged over ranks (what evaluation uses), and
        rank_buffers every rank's own, so that a resume continues exactly; the model is not changed.
        """
        self._settle_in_flight()  # the guard and the counters cover every step the checkpoint holds
        own = local_buffers(self.model)
        norms.average_running_stats(self.model)
        model_state = {k: v.detach().clone() if k in own else v for k, v in self.model.state_dict().items()}
        restore_buffers(self.model, own)
        bad = [name for name, t in model_state.items() if t.is_floating_point() and not t.isfinite().all()]
        if bad:
            raise FloatingPointError(f"refusing to checkpoint non-finite weights ('{bad[0]}') at iteration "
                                     f"{self.global_step}; the last checkpoint in {self.run_dir} is intact")
        state = self._state(model_state, all_gather_objects(own) if self.env.active else None)
        error = None
        if self.env.is_main:
            self.log.flush()  # the logs hold at least every step the checkpoint holds
            try:
                path = ckpt.save_periodic(state, self.run_dir, self.global_step, self.cfg.checkpoint.keep_last)
                if best:
                    ckpt.atomic_copy(path, os.path.join(self.run_dir, run_folder.BEST_NAME))
                self.log.info(f"saved {path}{' (best)' if best else ''}")
            except RunFolderError as e:
                error = str(e)
        error = broadcast_object(error)  # also keeps the ranks together, as a barrier would
        if error:
            raise RunFolderError(error)
        self._saved = (self.global_step, self.epoch_end_pending)

    def _resume(self):
        """Rank 0 picks the checkpoint (resume=auto: newest readable) and every rank loads that same file.

        Returns this rank's own running statistics to restore once DDP is built (None: keep the loaded ones).
        """
        target = self.cfg.checkpoint.resume
        if self.env.is_main:
            for path in run_folder.remove_stale_temporaries(self.run_dir):
                self.log.info(f"removed {path}: a checkpoint write interrupted by a kill")
        state = None
        if target == "auto":
            chosen, state = ckpt.load_newest(self.run_dir, self.log.info) if self.env.is_main else (None, None)
            target = broadcast_object(chosen)
        if target in ("none", None):
            self._open_logs()
            return None
        state = state or ckpt.load(target)
        check_training_checkpoint(state, target)
        changed = check_config_change(state.get("config"), to_dict(self.cfg), self.run_dir)
        newer = [p for p in run_folder.list_checkpoints(self.run_dir) if run_folder.step_of(p) > state["global_step"]]
        if self.cfg.checkpoint.resume != "auto" and newer:
            raise ValueError(f"{self.run_dir} already holds checkpoints past iteration {state['global_step']} "
                             f"({os.path.basename(newer[0])}); resume into a new folder (log.name=...)")
        load_strict(self.model, state["model"], f"checkpoint {target}")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.best_top1 = state["global_step"], state["best_top1"]
        self.bad_images = state.get("bad_images", 0)
        self.epoch_end_pending = state.get("epoch_end_pending", False)
        if os.path.samefile(os.path.dirname(os.path.abspath(target)), self.run_dir):
            self._saved = (self.global_step, self.epoch_end_pending)
        own = None
        if state["world"] == self.env.world:
            restore_rng(state["rng"][self.env.rank])
            own = (state.get("rank_buffers") or [None] * self.env.world)[self.env.rank]
        else:
            self.log.info(f"world size changed ({state['world']} -> {self.env.world}): RNG streams restart "
                          "and every rank starts from the averaged running statistics")
        if changed:
            self.log.info(f"warning: resuming with a changed config: {', '.join(changed)}")
        self._open_logs()
        self.log.info(f"resumed from {target}: epoch {self.epoch}, iteration {self.global_step}")
        return own

    def _open_logs(self):
        note = self.log.open(self.global_step)
        if note:
            self.log.info(note)

    # ----- training -----------------------------------------------------------------------------
    def fit(self):
        """Train until train.epochs (or train.max_iters), evaluating and checkpointing on schedule."""
        metrics = None
        while True:
            if self.epoch_end_pending:  # also after a resume from a stop at an epoch's end
                metrics = self.end_epoch()
                if self.stop_reason:
                    return self._stop_early()
            if self.epoch >= self.cfg.train.epochs:
                break
            if not self.train_epoch():
                return self._stop_early()
            self.epoch_end_pending = True
            if self._stop_requested():  # a stop during the epoch's last steps: validate after the resume
                self.stop_reason = "signal"
                return self._stop_early()
        if metrics is None:  # resumed after the run had finished: final.json is written anew
            metrics = self.validate()
        if self.env.is_main:
            summary = {k: v for k, v in metrics.items() if not torch.is_tensor(v)}
            run_folder.write_final(self.run_dir, {
                "status": "finished", **summary, "epochs": self.epoch, "iterations": self.global_step,
                "best_top1": self.best_top1, "setting": dataclasses.asdict(self.setting),
                "switch_weights": norms.switch_weights(self.model), "kernel_fallbacks": norms.backends.fallbacks(),
                "train_time_s": round(time.perf_counter() - self._start_time, 1)})
        self.close()
        return metrics

    def end_epoch(self):
        """An ended epoch's work, done once: validation and checkpoint on schedule, the best top-1."""
        cfg = self.cfg
        last = self.epoch == cfg.train.epochs
        metrics = self.validate() if last or self.epoch % cfg.train.eval_every == 0 else None
        best = metrics is not None and metrics["top1"] > self.best_top1
        if best:
            self.best_top1 = metrics["top1"]
        self.epoch_end_pending = False
        if best or last or (cfg.checkpoint.every_epochs and self.epoch % cfg.checkpoint.every_epochs == 0):
            self.save(best=best)
        if self._max_iters_reached() and not last:
            self.stop_reason = "max_iters"
        return metrics

    def close(self):
        """Close the logs and release the run folder (rank 0)."""
        self.log.close()
        if self.lock is not None:
            self.lock.release()

    def _max_iters_reached(self):
        return bool(self.cfg.train.max_iters) and self.global_step >= self.cfg.train.max_iters

    def _stop_early(self):
        if self._saved != (self.global_step, self.epoch_end_pending):  # a checkpoint may already hold this state
            self.save()
        if self.stop_reason == "signal":
            self.stop.requested()  # this rank may see the agent's death only now, after another rank did
            what = AGENT_DIED if self.stop.reason == AGENT_DIED else \
                f"signal {self.stop.reason or '(on another rank)'}"
            self.log.info(f"stopping on {what}: checkpoint written at iteration {self.global_step}; "
                          "rerun (or requeue) to resume")
        else:
            self.log.info(f"stopped at iteration {self.global_step} (train.max_iters); rerun to continue")
        self.close()
        return None

    @property
    def exit_code(self):
        """0 when finished or stopped by train.max_iters; 130 after SIGINT, 143 after another stop request."""
        return self.stop.exit_code if self.stop_reason == "signal" else 0

    def _on_signal(self, signum, frame=None):
        self.stop.on_signal(signum, frame)

    def _stop_requested(self):
        """True on every rank when any rank has a stop request (one small all-reduce)."""
        flag = torch.tensor([float(self.stop.requested())], dtype=torch.float64, device=self.env.device)
        return all_reduce_sum(flag).item() > 0

    def record_divergence(self, error):
        """Rank 0 writes final.json with status 'diverged', so sweeps and the collector report the cell as done."""
        if self.env.is_main:
            run_folder.write_final(self.run_dir, {"status": "diverged", "error": str(error), "epochs": self.epoch,
                                                  "iterations": self.global_step,
                                                  "setting": dataclasses.asdict(self.setting)})

    def train_epoch(self):
        """Run the rest of the current epoch; False when train.max_iters or a stop signal ended it early.

        Each step's flags and metrics are read one step later (see StepFlags), except on the steps whose
        work needs them at once: print, checkpoint, max_iters and the epoch's last step.
        """
        sampler = self.train_loader.sampler
        sampler.set_epoch(self.epoch, self.step_in_epoch)
        self.model.train()
        self._meter = _fresh_meter()
        epoch_start = time.perf_counter()
        tick = time.perf_counter()
        every = self.cfg.checkpoint.every_iters
        for images, targets, bad in self._progress(self.train_loader):
            self._meter["wait"] += time.perf_counter() - tick
            lr = self.advance(images, targets, bad)
            epoch_end = self.step_in_epoch == self.steps_per_epoch
            printing = self.global_step % self.cfg.log.print_every == 0
            saving = bool(every) and self.global_step % every == 0 and not epoch_end
            if printing or saving or epoch_end or self._max_iters_reached():
                self._settle_in_flight()
            if printing:
                self._log_train(lr)
            if self._stop_agreed and not epoch_end:  # at an epoch's end, fit() stops
                self.stop_reason = "signal"
                return False
            if self._max_iters_reached() and not epoch_end:
                self.stop_reason = "max_iters"
                return False
            if saving:
                self.save()
            tick = time.perf_counter()
        self.epoch += 1
        self.step_in_epoch = 0
        self.log.scalars(self.global_step, {"epoch_time_s": time.perf_counter() - epoch_start,
                                            "memory_mb": self._memory_mb()}, "epoch")
        self.log.scalars(self.global_step, {f"{layer}/{k}": v for layer, w in norms.switch_weights(self.model).items()
                                            for k, v in w.items()}, "sn")
        return True

    def advance(self, images, targets, bad):
        """One step as train_epoch takes it between print steps: the learning rate, train_step, the counters,
        and the previous step's flags settled. Returns the step's learning rate."""
        lr = lr_at(self.epoch + self.step_in_epoch / self.steps_per_epoch, self.setting.lr,
                   self.cfg.schedule, self.cfg.train.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        flags = self.train_step(images, targets, bad)
        self.step_in_epoch += 1
        self.global_step += 1
        previous, self._in_flight = self._in_flight, flags
        if previous is not None:
            self._settle(previous)
        return lr

    def train_step(self, images, targets, bad):
        """Forward, backward, optimizer step; returns the step's StepFlags, reduced over ranks in the background.

        The host does not wait for the step: its loss and top-1/top-5 hits, the gradient norm when clipping,
        the bad-image count and the stop request travel in one asynchronous all-reduce and are read (settled)
        at the next step. No pass over the gradients is made unless clipping needs their norm.
        """
        device = self.env.device
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            logits = self.net(images)
            loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.cfg.train.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        norm = loss.detach().new_zeros(())  # summed with the others: non-finite only if some rank's norm is
        clip = self.cfg.optim.clip_grad_norm
        if clip:
            params = [p for p in self.model.parameters() if p.grad is not None]
            total = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
            torch.nn.utils.clip_grads_with_norm_(params, clip, total, foreach=True)  # scales only
            if not self.scaler:  # gradient overflow under fp16 is the scaler's business: it skips the step
                norm = total
        bad_count = int((bad >= 0).sum())  # bad stays on the host: no device synchronization
        if bad_count:
            self._warn_bad_images(bad)
        hits = logits.detach().topk(min(5, logits.shape[1]), 1).indices == targets[:, None]
        host = torch.tensor([bad_count, float(self.stop.requested())], dtype=torch.float64)
        stats = torch.cat([torch.stack([loss.detach(), norm, hits[:, 0].sum(), hits.sum()]).double(),
                           host.to(device, non_blocking=True)])
        flags = StepFlags(stats, self.global_step + 1, len(targets) * self.env.world)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return flags

    def _settle(self, flags):
        """Act on a finished step's reduced flags: the guard, the bad-image limit, the stop request, the metrics.

        The guard reads the loss (and, when clipping, the gradient norm) summed over ranks in float64, which
        is non-finite exactly when some rank's is. A non-finite gradient under a finite loss makes the
        weights non-finite, and with them the next step's loss, so it stops the run one step later; save()
        refuses non-finite weights in any case.
        """
        loss_sum, norm_sum, correct1, correct5, bad_total, stop = flags.values()
        if not math.isfinite(loss_sum) or not math.isfinite(norm_sum):
            what = "loss" if not math.isfinite(loss_sum) else "gradient norm"
            raise FloatingPointError(
                f"non-finite {what} at iteration {flags.step}; no checkpoint holds the weights it produced, "
                f"the last checkpoint in {self.run_dir} is intact: lower optim.lr, add warmup or use bf16 "
                "instead of fp16")
        self.bad_images += int(bad_total)
        if self.bad_images > self.cfg.data.max_bad_images:
            raise RuntimeError(f"{self.bad_images} unreadable training images exceed data.max_bad_images="
                               f"{self.cfg.data.max_bad_images}; check the dataset or raise the limit")
        self._stop_agreed = self._stop_agreed or stop > 0
        meter = self._meter
        meter["loss"] += loss_sum / self.env.world
        meter["correct"] += int(correct1)
        meter["correct5"] += int(correct5)
        meter["seen"] += flags.seen
        meter["steps"] += 1

    def _settle_in_flight(self):
        """Wait for the newest step's flags and act on them (before anything that reads the state)."""
        flags, self._in_flight = self._in_flight, None
        if flags is not None:
            self._settle(flags)

    def _warn_bad_images(self, bad):
        """Name this rank's unreadable files at once (the loader reports them on the host)."""
        dataset = self.train_loader.dataset
        for index in bad[bad >= 0].tolist():
            print(f"warning (rank {self.env.rank}): unreadable image {dataset.samples[index][0]} "
                  "replaced by the next readable one", flush=True)

    def validate(self):
        if not self.cfg.norm.using_moving_average:
            self.recalibrate()
        norms.average_running_stats(self.model)  # evaluate with the statistics the checkpoint will hold
        metrics = evaluate(self.net, self.val_loader, self.env.device, self.cfg.train.channels_last,
                           self.cfg.train.precision)
        self.model.train()
        self.log.scalars(self.global_step, {k: metrics[k] for k in ("top1", "top5", "loss", "images")}, "val")
        self.log.info(f"epoch {self.epoch} val: top1 {metrics['top1']:.2f} top5 {metrics['top5']:.2f} "
                      f"loss {metrics['loss']:.4f} on {metrics['images']} images"
                      + (f" ({metrics['unreadable']} unreadable skipped)" if metrics["unreadable"] else ""))
        return metrics

    def recalibrate(self):
        """Batch-average mode: recompute running statistics from training batches (all ranks together).

        Each process batch holds stat_groups virtual GPUs, and each of their chunks counts as one batch,
        so the statistics are those of samples_per_gpu-sample batches, as in training. The RNG is forked
        so that recalibrating does not change the training run.
        """
        if self._recal_loader is None:  # its own sampler, so training's position in the epoch is untouched
            self._recal_loader = build_train_loader(self.cfg.data, self.setting.per_process, self.env.rank,
                                                    self.env.world, self.cfg.train.seed + 1,
                                                    num_classes=self.cfg.model.num_classes)
        loader = self._recal_loader
        loader.sampler.set_epoch(self.epoch)
        devices = [self.env.device] if self.env.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), self._autocast():
            used = norms.recalibrate(self.model, loader, self.cfg.train.recalibrate_batches)
        self.log.info(f"recalibrated norm statistics on {used} batches per process")

    # ----- logging ------------------------------------------------------------------------------
    def _log_train(self, lr):
        meter = self._meter
        elapsed = time.perf_counter() - meter["start"]
        seen = max(meter["seen"], 1)
        values = {"loss": meter["loss"] / max(meter["steps"], 1), "top1": 100.0 * meter["correct"] / seen,
                  "top5": 100.0 * meter["correct5"] / seen, "lr": lr,
                  "images_per_s": meter["seen"] / max(elapsed, 1e-9),
                  "data_wait_fraction": meter["wait"] / max(elapsed, 1e-9), "epoch": self.epoch}
        self.log.scalars(self.global_step, values, "train")
        self.log.info(f"epoch {self.epoch} iter {self.global_step} ({self.step_in_epoch}/{self.steps_per_epoch}) "
                      f"loss {values['loss']:.4f} top1 {values['top1']:.1f} lr {lr:.4g} "
                      f"{values['images_per_s']:.0f} img/s data-wait {100 * values['data_wait_fraction']:.0f}%")
        self._meter = _fresh_meter()

    def _progress(self, loader):
        if not (self.env.is_main and RunLogger.is_tty()):
            return loader
        from tqdm import tqdm
        return tqdm(loader, total=self.steps_per_epoch - self.step_in_epoch, desc=f"epoch {self.epoch}", leave=False)

    def _memory_mb(self):
        if self.env.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.env.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fresh_meter():
    return {"loss": 0.0, "correct": 0, "correct5": 0, "seen": 0, "steps": 0, "wait": 0.0, "start": time.perf_counter()}


def _rank_local_buffers():
    """DDP option keeping running statistics per rank (per-GPU semantics); norms.average_running_stats syncs them.

    torch >= 2.14 renamed broadcast_buffers=False to forward_sync_buffers=False (which still syncs once
    at start-up, as wanted: every rank starts from rank 0's buffers).
    """
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def _check_same_classes(train, val):
    if hasattr(train, "classes") and hasattr(val, "classes") and train.classes != val.classes:
        extra = sorted(set(val.classes) ^ set(train.classes))
        raise ValueError(f"train and val folders hold different classes (e.g. '{extra[0] if extra else '?'}'); "
                         "both need the same class folders")
