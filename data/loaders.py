"""DataLoaders for training and evaluation built from a DataConfig."""
import os
import signal

import torch

from .folder import ImageFolder
from .samplers import EvalSampler, TrainSampler
from .synthetic import SyntheticDataset
from .transforms import eval_transform, train_transform

SYNTHETIC_TRAIN, SYNTHETIC_VAL, SYNTHETIC_CLASSES = 1281, 500, 1000


def worker_init(worker_id):
    """One intra-op thread per worker: the workers already use every core between them.

    Workers ignore the stop signals (Slurm may send SIGTERM to every process of a job): the trainer
    handles them and shuts its workers down; a worker killed first would fail the step instead.
    """
    torch.set_num_threads(1)
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


def _loader(cfg, dataset, batch_size, sampler, seed):
    # A private generator draws the workers' base seed, so iterating never advances the trainer's global RNG.
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=cfg.workers,
        pin_memory=torch.cuda.is_available(), persistent_workers=False, worker_init_fn=worker_init,
        generator=torch.Generator().manual_seed(seed))


def _check_classes(dataset, num_classes):
    if num_classes is not None and len(dataset.classes) > num_classes:
        raise ValueError(f"{dataset.root} has {len(dataset.classes)} classes but the model has {num_classes} outputs")


_printed_notes = set()     # a split scanned again (the recalibration loader) does not repeat its notes


def _folder(cfg, split, transform, rank, num_classes, seed=0):
    """The ImageFolder of one split; rank 0 prints what its scan skipped (symlink loops, broken links...)."""
    dataset = ImageFolder(os.path.join(cfg.root, split), transform, seed=seed)
    _check_classes(dataset, num_classes)
    for line in dataset.notes if rank == 0 else []:
        if (dataset.root, line) not in _printed_notes:
            _printed_notes.add((dataset.root, line))
            print(f"note: {line}", flush=True)
    return dataset


def build_train_loader(cfg, batch_size, rank, world, seed, num_classes=None):
    """Loader of (images, targets, bad) full batches for this rank; call loader.sampler.set_epoch() per epoch."""
    if cfg.synthetic:
        # At least one global batch, so large (gpus, samples_per_gpu) settings can still be timed.
        length = max(SYNTHETIC_TRAIN, world * batch_size)
        dataset = SyntheticDataset(length, num_classes or SYNTHETIC_CLASSES, cfg.train_crop, seed=seed)
    else:
        dataset = _folder(cfg, cfg.train_split, train_transform(cfg), rank, num_classes, seed=seed)
    sampler = TrainSampler(len(dataset), batch_size, rank, world, seed)
    return _loader(cfg, dataset, batch_size, sampler, seed)


def build_eval_loader(cfg, batch_size, rank, world, num_classes=None):
    """Loader of (images, targets, bad) over this rank's share; the ranks together cover every sample once."""
    if cfg.synthetic:
        dataset = SyntheticDataset(SYNTHETIC_VAL, num_classes or SYNTHETIC_CLASSES, cfg.val_crop, seed=1)
    else:
        dataset = _folder(cfg, cfg.val_split, eval_transform(cfg), rank, num_classes)
    return _loader(cfg, dataset, batch_size, EvalSampler(len(dataset), rank, world), seed=0)


def build_stream_loader(cfg, dataset, batch_sampler):
    """Loader of (images, targets, bad) batches in the order `batch_sampler` yields them (the test stream)."""
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batch_sampler, num_workers=cfg.workers, pin_memory=torch.cuda.is_available(),
        worker_init_fn=worker_init, generator=torch.Generator().manual_seed(0))
