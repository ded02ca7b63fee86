"""Mixed multi-dataset batches whose composition is a pure function of (seed, step, rank).

Shape vocabulary: D training datasets with N_d instances, G = batch × world samples per
optimizer step, B = batch per rank.

:class:`StepSampler` lays each dataset out as an endless stream of epochs, every epoch an
independent permutation seeded by (seed, d, epoch), and gives step ``s`` the stream positions
``[c_d(s), c_d(s + 1))`` of every dataset d, with

    c_d(s) = ⌊s·G·R_d⌋ − ⌊s·G·R_{d−1}⌋,      R_d = r_0 + … + r_d  (R_{D−1} = 1),

so each step holds exactly G samples, the long-run share of dataset d is exactly r_d, and no
state has to be carried from step to step: resuming at step s (or another rank layout of the
same G) reproduces the same batches.  The G samples of a step are shuffled by (seed, s) and
rank r takes the r-th slice of B.  Augmentations are seeded per sample by
``TopDownDataset`` from (dataset seed, stream epoch, index), so a sample is identical whatever
the DataLoader worker layout.

With ``ratios=None`` the shares are the dataset sizes, as the official concatenated and
shuffled training set; an "epoch" is ⌈Σ N_d / G⌉ steps either way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from posebh.pipeline import TopDownDataset

__all__ = ["MixedDataset", "SampleKey", "StepBatches", "StepSampler"]

#: (dataset position d, stream epoch of that dataset, instance index).
SampleKey = tuple[int, int, int]


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


class StepSampler:
    """The samples of every optimizer step; see the module docstring.

    Args:
        sizes: N_d per dataset (all ≥ 1 where the ratio is positive).
        ratios: sampling weights (None: ``sizes``).
        batch_size: B per rank.
        world_size, rank: the data-parallel layout.
        seed: base seed.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        ratios: Sequence[float] | None,
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
    ) -> None:
        if not sizes:
            raise ValueError("no datasets to sample from")
        weights = list(sizes) if ratios is None else list(ratios)
        if len(weights) != len(sizes):
            raise ValueError(f"{len(weights)} ratios for {len(sizes)} datasets")
        for n, w in zip(sizes, weights, strict=True):
            if w > 0 and n < 1:
                raise ValueError("a dataset with a positive sampling ratio has no instances")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        # Exact rational shares: float rounding must not make ranks or resumed runs disagree.
        fr = [Fraction(w).limit_denominator(10**6) for w in weights]
        total = sum(fr)
        if total <= 0:
            raise ValueError(f"sampling ratios must have a positive sum: {weights}")
        self.shares = [f / total for f in fr]
        self.cumulative = [sum(self.shares[: d + 1], Fraction(0)) for d in range(len(fr))]
        self.sizes = [int(n) for n in sizes]
        self.batch_size = int(batch_size)
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.seed = int(seed)
        self.global_batch = self.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        """⌈Σ N_d / G⌉: steps that see as many samples as the training set holds."""
        return max(1, math.ceil(sum(self.sizes) / self.global_batch))

    def consumed(self, step: int) -> list[int]:
        """c_d(step): samples of each dataset drawn by steps 0..step−1."""
        g = self.global_batch
        bounds = [math.floor(step * g * c) for c in self.cumulative]
        return [b - (bounds[d - 1] if d else 0) for d, b in enumerate(bounds)]

    def counts(self, step: int) -> list[int]:
        """Samples of each dataset in step ``step`` (over all ranks; they sum to G)."""
        a, b = self.consumed(step), self.consumed(step + 1)
        return [y - x for x, y in zip(a, b, strict=True)]

    def _permutation(self, d: int, epoch: int) -> np.ndarray:
        return _permutation(self.seed, d, epoch, self.sizes[d])

    def global_batch_keys(self, step: int) -> list[SampleKey]:
        """All G sample keys of step ``step``, in the shuffled order ranks slice."""
        keys: list[SampleKey] = []
        for d, (start, stop) in enumerate(
            zip(self.consumed(step), self.consumed(step + 1), strict=True)
        ):
            n = self.sizes[d]
            for pos in range(start, stop):
                epoch, offset = divmod(pos, n)
                keys.append((d, epoch, int(self._permutation(d, epoch)[offset])))
        order = _rng(self.seed, 0x5EED, step).permutation(len(keys))
        return [keys[i] for i in order]

    def keys(self, step: int) -> list[SampleKey]:
        """This rank's B sample keys of step ``step``."""
        keys = self.global_batch_keys(step)
        b = self.batch_size
        return keys[self.rank * b : (self.rank + 1) * b]


@lru_cache(maxsize=64)
def _permutation(seed: int, d: int, epoch: int, n: int) -> np.ndarray:
    return _rng(seed, 0xDA7A, d, epoch).permutation(n)


class StepBatches:
    """Iterable of this rank's sample-key lists for steps ``start .. stop−1`` (a DataLoader
    ``batch_sampler``)."""

    def __init__(self, sampler: StepSampler, start: int, stop: int) -> None:
        self.sampler, self.start, self.stop = sampler, int(start), int(stop)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        for step in range(self.start, self.stop):
            yield self.sampler.keys(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


class MixedDataset(Dataset):
    """Indexed by :data:`SampleKey`: sample ``index`` of dataset ``d`` with the augmentation
    draws of that dataset's stream epoch."""

    def __init__(self, datasets: Sequence[TopDownDataset]) -> None:
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return sum(len(ds) for ds in self.datasets)

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        d, epoch, index = key
        ds = self.datasets[d]
        # Each DataLoader worker holds its own copy, so setting the epoch here is local.
        ds.set_epoch(epoch)
        return ds[index]


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: one intra-op thread (the main process computes) and a fixed
    torch seed (the pipeline itself never draws from the global generators)."""
    torch.set_num_threads(1)
    torch.manual_seed(worker_id)
