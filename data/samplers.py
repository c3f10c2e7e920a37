"""Distributed samplers: equal full batches per rank for training, every index exactly once for evaluation."""
import torch

from .seeding import mix_seed


class TrainSampler(torch.utils.data.Sampler):
    """Yields (index, epoch) for one rank: the epoch's permutation cut to whole global batches, in per-rank blocks.

    The permutation of range(dataset_len) comes from (seed, epoch) and is the same on every rank; it is cut
    to a multiple of world * batch_size. Rank r's batch b is the contiguous block number b * world + r of
    batch_size entries, so the global batch at step b is block b * world*batch_size of the permutation,
    and one process emulating k GPUs with stat_groups=k sees in each chunk exactly what GPU j would.
    """

    def __init__(self, dataset_len, batch_size, rank, world, seed, epoch=0, start_batch=0):
        if batch_size <= 0 or world <= 0 or not 0 <= rank < world:
            raise ValueError(f"need batch_size > 0 and 0 <= rank < world, got {batch_size}, {rank}, {world}")
        if dataset_len < world * batch_size:
            raise ValueError(f"{dataset_len} samples do not fill one global batch of "
                             f"world*batch_size = {world}*{batch_size}")
        self.dataset_len, self.batch_size, self.rank, self.world, self.seed = dataset_len, batch_size, rank, world, seed
        self.set_epoch(epoch, start_batch)

    @property
    def batches_per_epoch(self):
        """Full batches per rank in one epoch, whatever start_batch is."""
        return self.dataset_len // (self.world * self.batch_size)

    def set_epoch(self, epoch, start_batch=0):
        """Select the epoch's permutation and skip this rank's first start_batch batches (mid-epoch resume)."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch must lie in 0..{self.batches_per_epoch}, got {start_batch}")
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self):
        return (self.batches_per_epoch - self.start_batch) * self.batch_size

    def __iter__(self):
        gen = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        perm = torch.randperm(self.dataset_len, generator=gen)
        blocks = perm[:self.batches_per_epoch * self.world * self.batch_size].view(-1, self.world, self.batch_size)
        mine = blocks[self.start_batch:, self.rank].reshape(-1).tolist()
        return iter([(index, self.epoch) for index in mine])


class EvalSampler(torch.utils.data.Sampler):
    """Yields rank, rank + world, ...: no padding or duplicates, so the ranks together see every index once."""

    def __init__(self, dataset_len, rank, world):
        if world <= 0 or not 0 <= rank < world:
            raise ValueError(f"need 0 <= rank < world, got rank {rank}, world {world}")
        self.indices = range(rank, dataset_len, world)

    def __len__(self):
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)
