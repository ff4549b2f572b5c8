"""A resumable, DDP-aware infinite sampler.

The global stream of sample positions 0, 1, 2, ... is cut into epochs of a seeded random
permutation each; rank ``r`` of ``w`` takes positions ``p`` with ``p % w == r``. The
stream restarts exactly at any position, so a resumed run sees the same batches (and,
because each item also carries its position as a crop seed, the same crops) as a
straight run.
"""
from __future__ import annotations

from typing import Iterator, Tuple

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler):
    def __init__(self, num_samples: int, seed: int = 0, start_position: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True):
        if num_samples <= 0:
            raise ValueError("ResumableSampler needs a non-empty dataset")
        self.n = num_samples
        self.seed = seed
        self.position = start_position
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle

    def _perm(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator()
        g.manual_seed(self.seed * 100003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        p = self.position + self.rank
        epoch, perm = -1, None
        while True:
            e = p // self.n
            if e != epoch:
                epoch, perm = e, self._perm(e)
            yield int(perm[p % self.n]), p
            p += self.world_size

    def __len__(self) -> int:  # infinite; DataLoader only needs a number
        return 2 ** 62
