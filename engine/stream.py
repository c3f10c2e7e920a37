"""The test stream: each domain's images in a seeded permutation, cut into consecutive batches of B."""
import zlib

import torch

from data.seeding import mix_seed


def stream_order(length, seed, key):
    """Dataset indices in stream order: a permutation fixed by (seed, key), the same for every method and world.

    Class-sorted folders in file order would make every batch one class; the permutation avoids that.
    """
    generator = torch.Generator().manual_seed(mix_seed(seed, zlib.crc32(key.encode())))
    return torch.randperm(length, generator=generator)


class StreamBatches(torch.utils.data.Sampler):
    """This process's batches of one stream, as lists of dataset indices (a DataLoader batch_sampler).

    Batch j holds stream positions j*B .. j*B+B-1 (the last batch may be shorter). `share` says who runs it:
    "batch": batch j on rank j % world (methods whose batches are independent); "all": every batch here
    (a stream that must run in order on one process); "none": no batch here.
    """

    def __init__(self, order, batch, rank=0, world=1, share="batch"):
        if batch < 1:
            raise ValueError(f"stream batch size must be >= 1, got {batch}")
        starts = range(0, len(order), batch)
        keep = {"batch": lambda j: j % world == rank, "all": lambda j: True, "none": lambda j: False}[share]
        self.batches = [(s, order[s:s + batch].tolist()) for j, s in enumerate(starts) if keep(j)]

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(indices for _, indices in self.batches)

    def positions(self):
        """Stream position of every index this sampler yields, in the order it yields them."""
        return [s + i for s, indices in self.batches for i in range(len(indices))]
