"""WxBS v1.1 (Mishkin et al., BMVC 2015): fundamental matrix on extreme wide-baseline pairs.

Layout: ``{root}/{CATEGORY}/{pair}/01.*``, ``02.*`` and ``corrs.txt`` (one ground-truth correspondence per row:
x1 y1 x2 y2, pixels of the full-size images). Categories: WGBS (viewpoint), WGABS (appearance), WLABS, WGALBS and
WGLBS (illumination), WGSBS (thermal vs visible).

Protocol: F is estimated from the matches (original pixels) with MAGSAC++ (1 px, confidence 0.99999, 10000
iterations); the score of a pair is the fraction of ground-truth correspondences whose symmetric epipolar distance
under F, (d(p0, F^T p1) + d(p1, F p0)) / 2 in pixels, is below 1 / 5 / 10 / 20 px (0 when F cannot be estimated);
the table gives the mean over pairs, for all pairs and per category.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LoFTRError
from ..geometry import estimate_fundamental, symmetric_epipolar_distance
from .baselines import PairMatcher, PairMatches
from .report import BenchmarkResult, Column, Loaded, Record, mean_of, run_benchmark

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")


@dataclass(frozen=True)
class WxBSProtocol:
    """Estimation and scoring settings (see the module doc)."""

    method: str = "magsac"
    ransac_threshold: float = 1.0
    confidence: float = 0.99999
    max_iters: int = 10000
    thresholds: tuple[float, ...] = (1.0, 5.0, 10.0, 20.0)


@dataclass(frozen=True, eq=False)
class WxBSPair:
    """Images 01 and 02 of one pair and its ground-truth correspondences ``corrs`` (N, 4): x0 y0 x1 y1."""

    name: str
    split: str
    image0: Path
    image1: Path
    corrs: np.ndarray


def _image(folder: Path, stem: str) -> Path | None:
    return next((folder / f"{stem}{s}" for s in IMAGE_SUFFIXES if (folder / f"{stem}{s}").is_file()), None)


def read_corrs(path: str | Path) -> np.ndarray:
    """A ``corrs.txt`` → (N, 4) float64 rows x1 y1 x2 y2."""
    corrs = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if corrs.shape[1] != 4 or len(corrs) == 0:
        raise LoFTRError(f"{path} must hold rows of 4 numbers (x1 y1 x2 y2), got shape {corrs.shape}")
    return corrs


def read_wxbs(root: str | Path) -> Loaded[WxBSPair]:
    """Every ``CATEGORY/pair`` folder under ``root`` holding ``corrs.txt`` (sorted); a pair whose 01 or 02
    image is missing is skipped (and named)."""
    root = Path(root)
    if not root.is_dir():
        raise LoFTRError(f"WxBS folder {root} does not exist")
    folders = sorted(p.parent for p in root.glob("*/*/corrs.txt"))
    if not folders:
        raise LoFTRError(f"no WxBS pairs (CATEGORY/PAIR/corrs.txt) in {root}")
    pairs, skipped = [], []
    for folder in folders:
        name = f"{folder.parent.name}/{folder.name}"
        image0, image1 = _image(folder, "01"), _image(folder, "02")
        if image0 is None or image1 is None:
            skipped.append(name)
            continue
        pairs.append(WxBSPair(name, folder.parent.name, image0, image1, read_corrs(folder / "corrs.txt")))
    if skipped:
        log.warning("%d WxBS pairs skipped (01 or 02 image missing): %s", len(skipped), ", ".join(skipped))
    if not pairs:
        raise LoFTRError(f"no complete WxBS pair (01.*, 02.* and corrs.txt) in {root}")
    return Loaded(tuple(pairs), tuple(skipped))


def gt_epipolar_errors(F: np.ndarray | None, corrs: np.ndarray) -> np.ndarray:
    """(N,) symmetric epipolar distance in pixels of each ground-truth correspondence under F (inf without F)."""
    if F is None:
        return np.full(len(corrs), np.inf)
    return symmetric_epipolar_distance(corrs[:, :2], corrs[:, 2:], F)


def score_wxbs(pair: WxBSPair, matches: PairMatches, protocol: WxBSProtocol) -> Record:
    """Fraction of ground-truth correspondences consistent with the estimated F at each threshold, the median
    ground-truth error (px, inf on failure) and the number of inliers."""
    est = estimate_fundamental(matches.kpts0, matches.kpts1, method=protocol.method,
                               threshold=protocol.ransac_threshold, confidence=protocol.confidence,
                               max_iters=protocol.max_iters)
    errors = gt_epipolar_errors(None if est is None else est.matrix, pair.corrs)
    rec: Record = {f"frac@{t:g}px": float(np.mean(errors < t)) for t in protocol.thresholds}
    rec["median_error"] = float(np.median(errors))
    rec["inliers"] = 0 if est is None else est.num_inliers
    return rec


def aggregate_wxbs(records: list[Record], protocol: WxBSProtocol) -> dict[str, float]:
    """Mean over pairs of each fraction."""
    return {f"frac@{t:g}px": mean_of(records, f"frac@{t:g}px") for t in protocol.thresholds}


def run(loaded: Loaded[WxBSPair], matchers: Sequence[PairMatcher], protocol: WxBSProtocol = WxBSProtocol(), *,
        progress: bool = True, config: dict[str, Any] | None = None) -> BenchmarkResult:
    """Every matcher on every WxBS pair."""
    columns = [Column(f"frac@{t:g}px", f"GT<{t:g}px") for t in protocol.thresholds]
    title = (f"WxBS fundamental matrix ({protocol.method} {protocol.ransac_threshold:g} px): GT correspondences "
             "within the threshold of the estimated epipolar lines")
    return run_benchmark("wxbs", title, loaded, matchers, partial(score_wxbs, protocol=protocol),
                         partial(aggregate_wxbs, protocol=protocol), columns,
                         config={"protocol": asdict(protocol), **(config or {})}, progress=progress)


__all__ = ["WxBSProtocol", "WxBSPair", "read_wxbs", "read_corrs", "gt_epipolar_errors", "score_wxbs",
           "aggregate_wxbs", "run"]
