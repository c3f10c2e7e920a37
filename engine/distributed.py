"""Process-group set-up for torchrun (or a single plain process) and small collective helpers."""
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistEnv:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def active(self):
        return self.world > 1


def init_distributed(timeout_minutes=30):
    """Read torchrun's environment; NCCL on CUDA, gloo on CPU, one device per process by LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes),
                                **({"device_id": device} if device.type == "cuda" else {}))
    return DistEnv(rank, world, local_rank, device)


def _multi_process():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shutdown():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor):
    """Sum a tensor over all ranks in place (a no-op in a single process) and return it."""
    if _multi_process():
        dist.all_reduce(tensor)
    return tensor


class StepFlags:
    """A step's small float64 vector, summed over ranks in the background and read later.

    The all-reduce is launched asynchronously; on CUDA the sum is then copied to pinned host memory
    behind an event, so reading it waits for that copy only, never for work queued after it.
    """

    def __init__(self, stats, step, seen):
        self.step, self.seen = step, seen
        self._work = dist.all_reduce(stats, async_op=True) if _multi_process() else None
        self._event = None
        if stats.is_cuda:
            if self._work is not None:
                self._work.wait()  # orders the current stream after the collective; the host does not block
                self._work = None
            self._host = torch.empty(stats.shape, dtype=stats.dtype, pin_memory=True)
            self._host.copy_(stats, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host = stats

    def values(self):
        """The summed values as Python floats."""
        if self._work is not None:
            self._work.wait()
        if self._event is not None:
            self._event.synchronize()
        return self._host.tolist()


def all_gather_objects(obj):
    """List of `obj` from every rank, in rank order."""
    if not _multi_process():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's `obj` on every rank."""
    if not _multi_process():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
