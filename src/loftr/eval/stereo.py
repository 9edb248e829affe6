"""Rectified stereo with ground-truth disparity (Middlebury layout; scikit-image ships the Motorcycle pair).

A left-image point (x, y) with disparity d lies at (x - d, y) in the right image. Disparity maps use the
pixel-centre convention: ``disp[r, c]`` is the disparity of the pixel centred at (c, r).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class StereoPair:
    left: Path
    right: Path
    disparity: np.ndarray  # (H, W) float, inf/nan/<=0 where unknown
    name: str


def motorcycle() -> StereoPair:
    """The Middlebury 2014 Motorcycle pair bundled with scikit-image (no download)."""
    import skimage

    root = Path(skimage.__file__).parent / "data"
    disp = np.load(root / "motorcycle_disp.npz")["arr_0"].astype(np.float64)
    return StereoPair(root / "motorcycle_left.png", root / "motorcycle_right.png", disp, "motorcycle")


def stereo_errors(kpts0: np.ndarray, kpts1: np.ndarray, disparity: np.ndarray) -> np.ndarray:
    """(M,) distance in pixels between each right keypoint and the true position of its left keypoint; NaN where
    the disparity is unknown or the left keypoint is outside the map."""
    kpts0, kpts1 = np.asarray(kpts0, np.float64), np.asarray(kpts1, np.float64)
    h, w = disparity.shape
    col, row = np.round(kpts0[:, 0]).astype(int), np.round(kpts0[:, 1]).astype(int)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    d = np.full(len(kpts0), np.nan)
    d[inside] = disparity[row[inside], col[inside]]
    d[~np.isfinite(d) | (d <= 0)] = np.nan
    truth = np.stack([kpts0[:, 0] - d, kpts0[:, 1]], -1)
    return np.linalg.norm(kpts1 - truth, axis=-1)


def precision(errors: np.ndarray, thresholds: tuple[float, ...] = (1.0, 3.0)) -> dict[str, float]:
    """Fraction of matches with known ground truth whose error is below each threshold, and that count."""
    known = errors[np.isfinite(errors)]
    out = {f"precision@{t:g}px": float((known < t).mean()) if len(known) else 0.0 for t in thresholds}
    out["with_ground_truth"] = int(len(known))
    return out
