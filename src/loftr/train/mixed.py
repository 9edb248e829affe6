"""Batches drawn from several endless training sources in one run: synthetic 3D scenes (depth supervision),
homographic photo pairs (homography supervision), real photo pairs with a teacher's matches (sparse coarse
supervision) and real posed pairs (SfM tracks and epipolar geometry), so one model learns real parallax without
losing planar sub-pixel accuracy.

Every batch holds pairs of ONE source (their supervision and sizes differ): the trainer's step sampler gives the
``batch_size`` slots of a (step, rank) consecutive indexes ``g = (step * world + rank) * batch_size + b``, so
``g // batch_size`` names the batch, and the source of a batch is a pure function of (seed, that number).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from .data import PairSample, collate
from .datasets import DepthPairSample, collate_depth
from .posed import PosedPairSample, collate_posed
from .teacher import MatchPairSample, collate_matches

COLLATE = {PairSample: collate, DepthPairSample: collate_depth, MatchPairSample: collate_matches,
           PosedPairSample: collate_posed}


class MixedPairs(Dataset):
    """Endless pairs: each batch comes from ``sources[k]`` with probability ``shares[k]`` (normalised).

    The sources are endless datasets (any index is an item) of :data:`COLLATE`'s sample types; ``length`` is the
    nominal epoch length."""

    def __init__(self, sources: Sequence[Dataset], shares: Sequence[float], batch_size: int, seed: int = 0,
                 length: int = 1000) -> None:
        if len(sources) != len(shares) or not sources:
            raise ValueError("give one share per source")
        if min(shares) < 0 or sum(shares) <= 0:
            raise ValueError(f"shares must be non-negative with a positive sum, got {list(shares)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.sources = list(sources)
        self.cumulative = np.cumsum(np.asarray(shares, np.float64) / sum(shares))
        self.batch_size, self.seed, self.length = int(batch_size), seed, length

    def __len__(self) -> int:
        return self.length

    def source_of(self, index: int) -> int:
        """Which source item ``index`` (and every item of its batch) comes from."""
        batch = int(index) // self.batch_size
        u = np.random.default_rng([self.seed, batch, 7]).random()
        return min(int(np.searchsorted(self.cumulative, u, side="right")), len(self.sources) - 1)

    def __getitem__(self, index: int) -> Any:
        return self.sources[self.source_of(index)][index]

    @staticmethod
    def collate(samples: list[Any]) -> Any:
        """One batch of one source (a batch that mixes sample types is a sampling error)."""
        kind = type(samples[0])
        if kind not in COLLATE or any(type(s) is not kind for s in samples):
            raise ValueError(f"a batch mixes sample types ({', '.join(sorted({type(s).__name__ for s in samples}))}):"
                             " MixedPairs needs the trainer's step sampler (consecutive indexes per batch)")
        return COLLATE[kind](samples)
