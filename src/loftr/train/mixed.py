"""Batches drawn from two endless training sources in one run: synthetic 3D scenes (depth supervision) and homographic
photo pairs (homography supervision), so one model learns real parallax without losing planar sub-pixel accuracy.

Every batch holds pairs of ONE source (their supervision and sizes differ): the trainer's step sampler gives the
``batch_size`` slots of a (step, rank) consecutive indexes ``g = (step * world + rank) * batch_size + b``, so
``g // batch_size`` names the batch, and the source of a batch is a pure function of (seed, that number).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from .data import PairSample, collate
from .datasets import DepthPairSample, collate_depth


class MixedPairs(Dataset):
    """Endless pairs: batch n comes from ``first`` with probability ``share_first``, else from ``second``.

    ``first`` and ``second`` are endless datasets (any index is an item); ``length`` is the nominal epoch length."""

    def __init__(self, first: Dataset, second: Dataset, batch_size: int, share_first: float = 0.5, seed: int = 0,
                 length: int = 1000) -> None:
        if not 0.0 <= share_first <= 1.0:
            raise ValueError(f"share_first must be in [0, 1], got {share_first}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.first, self.second = first, second
        self.batch_size, self.share_first, self.seed, self.length = int(batch_size), float(share_first), seed, length

    def __len__(self) -> int:
        return self.length

    def takes_first(self, index: int) -> bool:
        """Whether item ``index`` (and every item of its batch) comes from ``first``."""
        batch = int(index) // self.batch_size
        return bool(np.random.default_rng([self.seed, batch, 7]).random() < self.share_first)

    def __getitem__(self, index: int) -> Any:
        return (self.first if self.takes_first(index) else self.second)[index]

    @staticmethod
    def collate(samples: list[Any]) -> Any:
        """One batch of one source (a batch that mixes depth and homography pairs is a sampling error)."""
        depth = [isinstance(s, DepthPairSample) for s in samples]
        if all(depth):
            return collate_depth(samples)
        if not any(depth) and all(isinstance(s, PairSample) for s in samples):
            return collate(samples)
        raise ValueError("a batch mixes depth pairs and homography pairs: MixedPairs needs the trainer's step "
                         "sampler (consecutive indexes per batch)")
