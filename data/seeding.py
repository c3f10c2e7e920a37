"""Stable seeds derived from integers, identical in every process and Python version."""
import contextlib
import hashlib

import torch


def mix_seed(*values):
    """A 63-bit seed from integers; Python's hash() is avoided because nothing guarantees it stays fixed."""
    text = ",".join(str(int(v)) for v in values).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def split_key(key):
    """(index, epoch or None) from an int index or an (index, epoch) tuple."""
    if isinstance(key, (tuple, list)):
        index, epoch = key
        return int(index), int(epoch)
    return int(key), None


@contextlib.contextmanager
def cpu_rng_seeded(seed):
    """Run the block with torch's CPU generator seeded to seed, then restore its previous state."""
    # Equivalent to fork_rng(devices=[]) + torch.manual_seed for the CPU generator the transforms use, but
    # torch.manual_seed would also reseed (and not restore) the CUDA generators when loading in the main
    # process, and the pair costs ~130 us per sample against ~2 us here.
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(state)
