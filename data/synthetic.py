"""Random tensors shaped like normalized images, for measuring speed without disk or decoding."""
import torch

from .seeding import mix_seed, split_key


class SyntheticDataset(torch.utils.data.Dataset):
    """length samples of N(0, 1) images (3, size, size) and targets, fixed per index; returns (image, target, -1)."""

    def __init__(self, length, num_classes, size, seed=0):
        self.length, self.num_classes, self.size, self.seed = length, num_classes, size, seed

    def __len__(self):
        return self.length

    def __getitem__(self, key):
        # The epoch is accepted for the (index, epoch) convention but ignored: a sample's label must not change.
        index, _ = split_key(key)
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        gen = torch.Generator().manual_seed(mix_seed(self.seed, index))
        target = int(torch.randint(self.num_classes, (), generator=gen))
        return torch.randn(3, self.size, self.size, generator=gen), target, -1
