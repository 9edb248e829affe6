"""Rectified stereo pairs with dense ground-truth disparity: match precision at 1 / 3 px.

Pairs: the Middlebury 2014 Motorcycle pair that scikit-image ships (default, no download) or Middlebury scene
folders (``im0.png``, ``im1.png``, ``disp0.pfm``; see :mod:`loftr.eval.stereo`). A left keypoint (x, y) with
disparity d should match (x - d, y); the error of a match is the distance of its right keypoint to that point.
Per pair: the fraction of the matches with known disparity whose error is below 1 / 3 px (0 when none has one),
and the match counts; the table gives means over pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .baselines import PairMatcher, PairMatches
from .report import BenchmarkResult, Column, Loaded, Record, mean_of, run_benchmark
from .stereo import StereoPair, middlebury_scenes, motorcycle, precision, stereo_errors

THRESHOLDS = (1.0, 3.0)


@dataclass(frozen=True, eq=False)
class RectifiedPair:
    """A left/right pair as a benchmark pair; ``disparity`` (H, W) of the left image, non-finite/<=0 unknown."""

    name: str
    split: str
    image0: Path
    image1: Path
    disparity: np.ndarray


def _as_pair(p: StereoPair) -> RectifiedPair:
    return RectifiedPair(p.name, "middlebury", p.left, p.right, p.disparity)


def read_pairs(root: str | Path | None = None) -> Loaded[RectifiedPair]:
    """The Motorcycle pair when ``root`` is None, else the Middlebury scene(s) under ``root``."""
    scenes = [motorcycle()] if root is None else middlebury_scenes(root)
    return Loaded(tuple(_as_pair(s) for s in scenes))


def score_stereo(pair: RectifiedPair, matches: PairMatches, thresholds: Sequence[float] = THRESHOLDS) -> Record:
    """Precision at each threshold over the matches with known disparity, and how many have one."""
    errors = stereo_errors(matches.kpts0, matches.kpts1, pair.disparity) if len(matches) else np.zeros(0)
    p = precision(errors, tuple(thresholds))
    return {**{f"precision@{t:g}px": p[f"precision@{t:g}px"] for t in thresholds},
            "with_gt": int(p["with_ground_truth"])}


def aggregate_stereo(records: list[Record], thresholds: Sequence[float] = THRESHOLDS) -> dict[str, float]:
    """Mean over pairs of the precisions and of the matches with known disparity."""
    out = {f"precision@{t:g}px": mean_of(records, f"precision@{t:g}px") for t in thresholds}
    out["with_gt"] = mean_of(records, "with_gt")
    return out


def run(loaded: Loaded[RectifiedPair], matchers: Sequence[PairMatcher], thresholds: Sequence[float] = THRESHOLDS,
        *, progress: bool = True, config: dict[str, Any] | None = None) -> BenchmarkResult:
    """Every matcher on every rectified pair."""
    thresholds = tuple(thresholds)
    columns = [*(Column(f"precision@{t:g}px", f"P@{t:g}px") for t in thresholds),
               Column("with_gt", "With GT", "int")]
    names = [p.name for p in loaded.pairs]
    what = ", ".join(names) if len(names) <= 3 else f"{len(names)} Middlebury scenes"
    return run_benchmark("stereo", f"Rectified stereo against GT disparity ({what})", loaded, matchers,
                         partial(score_stereo, thresholds=thresholds), partial(aggregate_stereo, thresholds=thresholds),
                         columns, config={"thresholds": list(thresholds), **(config or {})}, progress=progress)


__all__ = ["RectifiedPair", "read_pairs", "score_stereo", "aggregate_stereo", "run", "THRESHOLDS"]
