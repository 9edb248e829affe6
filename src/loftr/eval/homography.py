"""Homography estimation on HPatches (Balntas et al., CVPR 2017): corner-error AUC, illumination / viewpoint.

Layout: ``{root}/{i_*,v_*}/1.ppm .. 6.ppm`` with ``H_1_2 .. H_1_6`` (3x3 text, image-1 pixels → image-k pixels);
the pairs are (1, k). The sequence prefix gives the split: ``i_`` illumination, ``v_`` viewpoint.

Protocol (LoFTR paper): H is estimated from the matches in ORIGINAL pixels (RANSAC, 3 px, the threshold given in
evaluation pixels); the error of a pair is the mean distance between image 1's four corners mapped by the estimate
and by the ground truth (inf on failure), measured in the evaluation frame where each image is scaled so that its
shorter side is ``eval_short_side`` (480, as in the paper; None keeps original pixels). The table gives its AUC at
3/5/10 px. :func:`score_homography` also serves the synthetic benchmark, which adds match precision.
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
from ..geometry import estimate_homography, homography_auc, homography_corner_error, warp_points_homography
from ..io import ImageLike
from .baselines import PairMatcher, PairMatches
from .report import BenchmarkResult, Column, Loaded, Record, image_size, mean_of, run_benchmark

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".ppm", ".png", ".jpg", ".jpeg")
SPLITS = {"i": "illumination", "v": "viewpoint"}


@dataclass(frozen=True)
class HomographyProtocol:
    """Estimation and scoring settings (see the module doc)."""

    ransac_threshold: float = 3.0
    method: str = "ransac"
    eval_short_side: int | None = 480
    auc_thresholds: tuple[float, ...] = (3.0, 5.0, 10.0)
    precision_thresholds: tuple[float, ...] = ()


@dataclass(frozen=True, eq=False)
class HomographyPair:
    """Two images (paths or arrays) of sizes ``size0``, ``size1`` (W, H) with H_0to1 (3, 3) in original pixels."""

    name: str
    split: str
    image0: ImageLike
    image1: ImageLike
    H_0to1: np.ndarray
    size0: tuple[int, int]
    size1: tuple[int, int]


def _image(folder: Path, stem: str) -> Path | None:
    return next((folder / f"{stem}{s}" for s in IMAGE_SUFFIXES if (folder / f"{stem}{s}").is_file()), None)


def read_hpatches(root: str | Path) -> Loaded[HomographyPair]:
    """The (1, k) pairs of every ``i_*`` / ``v_*`` sequence under ``root`` (sorted); pairs whose image or H
    file is missing are skipped (and named)."""
    root = Path(root)
    if not root.is_dir():
        raise LoFTRError(f"HPatches folder {root} does not exist")
    sequences = sorted(d for d in root.iterdir() if d.is_dir() and d.name[:2] in ("i_", "v_"))
    if not sequences:
        raise LoFTRError(f"no HPatches sequences (i_* or v_* folders) in {root}")
    pairs, skipped = [], []
    for seq in sequences:
        ref = _image(seq, "1")
        for k in range(2, 7):
            other, h_file = _image(seq, str(k)), seq / f"H_1_{k}"
            if ref is None or other is None or not h_file.is_file():
                skipped.append(f"{seq.name}/1-{k}")
                continue
            H = np.loadtxt(h_file, dtype=np.float64).reshape(3, 3)
            pairs.append(HomographyPair(f"{seq.name}/1-{k}", SPLITS[seq.name[0]], ref, other, H, image_size(ref),
                                        image_size(other)))
    if not pairs:
        raise LoFTRError(f"no complete HPatches pair (k.ppm and H_1_k) in {root}")
    if skipped:
        log.warning("%d HPatches pairs skipped (files missing), e.g. %s", len(skipped), skipped[0])
    return Loaded(tuple(pairs), tuple(skipped))


def _eval_scale(size: tuple[int, int], short_side: int | None) -> float:
    return 1.0 if short_side is None else short_side / min(size)


def _scale_matrix(s: float) -> np.ndarray:
    """Original pixels → pixels of the image scaled by ``s`` (pixel-centre convention)."""
    return np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5], [0.0, 0.0, 1.0]])


def match_errors(kpts0: np.ndarray, kpts1: np.ndarray, H_0to1: np.ndarray) -> np.ndarray:
    """(M,) distance between each image-1 keypoint and its image-0 keypoint mapped by the true H."""
    return np.linalg.norm(warp_points_homography(kpts0, H_0to1) - kpts1, axis=1) if len(kpts0) else np.zeros(0)


def score_homography(pair: HomographyPair, matches: PairMatches, protocol: HomographyProtocol) -> Record:
    """Corner error (evaluation pixels, inf on failure), RANSAC inliers and, for each precision threshold, the
    fraction of matches within it of the truth (evaluation pixels; 0 without matches)."""
    s0, s1 = _eval_scale(pair.size0, protocol.eval_short_side), _eval_scale(pair.size1, protocol.eval_short_side)
    A0, A1 = _scale_matrix(s0), _scale_matrix(s1)
    est = estimate_homography(matches.kpts0, matches.kpts1, method=protocol.method,
                              threshold=protocol.ransac_threshold / s1)
    H_gt = A1 @ pair.H_0to1 @ np.linalg.inv(A0)
    H_est = None if est is None else A1 @ est.matrix @ np.linalg.inv(A0)
    w0, h0 = round(pair.size0[0] * s0), round(pair.size0[1] * s0)
    rec: Record = {"corner_error": homography_corner_error(H_est, H_gt, w0, h0),
                   "inliers": 0 if est is None else est.num_inliers}
    if protocol.precision_thresholds:
        errors = match_errors(matches.kpts0, matches.kpts1, pair.H_0to1) * s1
        for t in protocol.precision_thresholds:
            rec[f"precision@{t:g}px"] = float(np.mean(errors < t)) if len(errors) else 0.0
    return rec


def aggregate_homography(records: list[Record], protocol: HomographyProtocol) -> dict[str, float]:
    """Corner-error AUC at each threshold and the mean precision at each precision threshold."""
    aucs = homography_auc([r["corner_error"] for r in records], protocol.auc_thresholds)
    out = {f"auc@{t:g}px": v for t, v in aucs.items()}
    out.update({f"precision@{t:g}px": mean_of(records, f"precision@{t:g}px") for t in protocol.precision_thresholds})
    return out


def columns(protocol: HomographyProtocol) -> list[Column]:
    return [*(Column(f"auc@{t:g}px", f"AUC@{t:g}px") for t in protocol.auc_thresholds),
            *(Column(f"precision@{t:g}px", f"P@{t:g}px") for t in protocol.precision_thresholds)]


def run(loaded: Loaded[HomographyPair], matchers: Sequence[PairMatcher],
        protocol: HomographyProtocol = HomographyProtocol(), *, progress: bool = True,
        config: dict[str, Any] | None = None, benchmark: str = "homography", title: str | None = None,
        ) -> BenchmarkResult:
    """Every matcher on every pair (HPatches unless ``benchmark`` / ``title`` say otherwise)."""
    if title is None:
        frame = "original pixels" if protocol.eval_short_side is None else f"shorter side {protocol.eval_short_side}"
        title = f"HPatches homography (corner error, {frame}; {protocol.method} {protocol.ransac_threshold:g} px)"
    return run_benchmark(benchmark, title, loaded, matchers, partial(score_homography, protocol=protocol),
                         partial(aggregate_homography, protocol=protocol), columns(protocol),
                         config={"protocol": asdict(protocol), **(config or {})}, progress=progress)


__all__ = ["HomographyProtocol", "HomographyPair", "read_hpatches", "match_errors", "score_homography",
           "aggregate_homography", "columns", "run"]
