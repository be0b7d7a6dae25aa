"""A distributed sampler that can start in the middle of an epoch (exact resume)."""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Each rank gets a disjoint, equally long slice of a per-epoch permutation.

    The permutation depends only on (seed, epoch), so a resumed run skips exactly the
    ``start_batch`` batches already consumed without loading them.
    """

    def __init__(self, size: int, batch_size: int, rank: int, world: int, seed: int, shuffle: bool = True):
        self.size, self.batch_size, self.rank, self.world = size, batch_size, rank, world
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start_batch = 0, 0
        self.batches_per_epoch = size // (batch_size * world)
        if self.batches_per_epoch == 0:
            raise ValueError(f"dataset of {size} samples is smaller than one global batch "
                             f"({batch_size} × {world} ranks)")

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.size, generator=generator)

    def __iter__(self):
        used = self.batches_per_epoch * self.batch_size * self.world
        mine = self._order()[:used].view(self.batches_per_epoch, self.world, self.batch_size)[:, self.rank]
        return iter(mine[self.start_batch:].reshape(-1).tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


class EpochSeededDataset(torch.utils.data.Dataset):
    """Seeds torch/numpy/random from (seed, epoch, index) before each item, so random
    augmentations do not depend on which loader worker draws the sample — needed for an
    interrupted-and-resumed run to see the very same crops."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index: int):
        import random

        import numpy as np
        item_seed = (self.seed * 1_000_003 + self.epoch * 7_919 + int(index)) % (2 ** 31)
        # Fork the RNGs so that, with num_workers=0, loading never disturbs the main
        # process's streams (dropout etc.).
        numpy_state, python_state = np.random.get_state(), random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed)
            np.random.seed(item_seed)
            random.seed(item_seed)
            try:
                return self.dataset[index]
            finally:
                np.random.set_state(numpy_state)
                random.setstate(python_state)
