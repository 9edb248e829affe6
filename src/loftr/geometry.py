"""Two-view geometry from matches, and the error metrics of the LoFTR/SuperGlue evaluation.

Conventions: points are (M, 2) (x, y) pixel coordinates (numpy arrays or torch tensors, converted to float64);
a relative pose (R, t) or ``T_0to1`` (4, 4) maps camera-0 coordinates to camera-1 coordinates, X1 = R @ X0 + t;
E and F satisfy x1^T E x0 = 0 (normalised coordinates) and p1^T F p0 = 0 (pixels). Estimators never raise on
bad data: too few points, OpenCV failures and degenerate results give ``None``. Non-finite input rows are left
out of the estimation and reported as outliers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "GeometryResult", "PoseResult", "METHODS", "as_numpy",
    "estimate_homography", "estimate_fundamental", "estimate_essential", "estimate_relative_pose",
    "angle_error_rotation", "angle_error_translation", "pose_error", "pose_auc", "homography_auc",
    "homography_corner_error", "warp_points_homography", "symmetric_epipolar_distance", "sampson_distance",
    "essential_from_pose", "fundamental_from_pose", "epipolar_error_normalized", "reproject_with_depth",
]

METHODS: dict[str, int] = {"magsac": cv2.USAC_MAGSAC, "ransac": cv2.RANSAC, "lmeds": cv2.LMEDS}


@dataclass(frozen=True, eq=False)
class GeometryResult:
    """A robustly estimated 3x3 matrix (H, F or E) and its (M,) bool inlier mask over the input matches."""

    matrix: np.ndarray
    inliers: np.ndarray

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


@dataclass(frozen=True, eq=False)
class PoseResult:
    """Relative pose: R (3, 3), unit t (3,), (M,) bool inliers (essential-matrix inliers passing the chirality
    check) and the essential matrix (3, 3) it came from."""

    R: np.ndarray
    t: np.ndarray
    inliers: np.ndarray
    essential: np.ndarray

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


# ----------------------------------------------------------------------------------------------------- helpers
def as_numpy(x: Any) -> np.ndarray:
    """A float64 numpy copy of an array-like or a torch tensor (any device, gradients dropped)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.array(x, dtype=np.float64)


def _points(x: Any) -> np.ndarray:
    p = as_numpy(x)
    if p.size == 0:
        return p.reshape(0, 2)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"expected (M, 2) points, got shape {p.shape}")
    return p


def _pairs(kpts0: Any, kpts1: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both point sets (M, 2) and the (M,) mask of rows that are finite in both."""
    p0, p1 = _points(kpts0), _points(kpts1)
    if len(p0) != len(p1):
        raise ValueError(f"kpts0 and kpts1 differ in length: {len(p0)} vs {len(p1)}")
    return p0, p1, np.isfinite(p0).all(1) & np.isfinite(p1).all(1)


def _flag(method: str) -> int:
    try:
        return METHODS[method.lower()]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}") from None


def _opencv(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Calls an OpenCV function; an OpenCV error (degenerate data) becomes None."""
    try:
        return fn(*args, **kwargs)
    except cv2.error as err:
        logger.debug("%s failed: %s", getattr(fn, "__name__", fn), err)
        return None


def _expand(mask: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The (M,) bool inlier mask of all inputs from the mask OpenCV gave for the rows ``keep``."""
    full = np.zeros(len(keep), dtype=bool)
    full[keep] = np.asarray(mask).ravel() > 0
    return full


def _valid_output(matrix: Any, mask: Any, n: int, min_inliers: int) -> bool:
    """A finite (3k, 3) matrix and an n-long mask with at least ``min_inliers`` inliers."""
    return (
        matrix is not None and mask is not None and np.ndim(matrix) == 2 and np.shape(matrix)[1] == 3
        and np.shape(matrix)[0] >= 3 and np.shape(matrix)[0] % 3 == 0 and np.isfinite(matrix).all()
        and np.size(mask) == n and int(np.count_nonzero(mask)) >= min_inliers
    )


def _collinear(p0: np.ndarray, p1: np.ndarray, mask: Any) -> bool:
    """Whether the points flagged by ``mask`` are (nearly) on a line in either image: no geometry is defined."""
    keep = np.asarray(mask).ravel() > 0
    for p in (p0[keep], p1[keep]):
        sv = np.linalg.svd(p - p.mean(axis=0), compute_uv=False)
        if not sv[1] > 1e-3 * sv[0]:
            return True
    return False


def _homogeneous(p: np.ndarray) -> np.ndarray:
    return np.concatenate([p, np.ones((len(p), 1))], axis=1)


def _normalise(p: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels (M, 2) to normalised camera coordinates (M, 2) with the intrinsics K (3, 3)."""
    h = _homogeneous(p) @ np.linalg.inv(K).T
    return h[:, :2] / h[:, 2:]


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, with 0 where both are 0 (a point on the epipole) and inf where only den is."""
    out = np.where(num == 0, 0.0, np.inf)
    np.divide(num, den, out=out, where=den > 0)
    return out


# ------------------------------------------------------------------------------------------------- estimation
def estimate_homography(
    kpts0: Any, kpts1: Any, method: str = "magsac", threshold: float = 3.0,
    confidence: float = 0.99999, max_iters: int = 10000,
) -> GeometryResult | None:
    """Homography H (3, 3), normalised to H[2, 2] = 1, with kpts1 ~ H @ kpts0 (both (M, 2) pixels).

    ``threshold`` is the reprojection error in image-1 pixels. None for fewer than 4 points, a singular H or
    inliers (nearly) collinear in either image.
    """
    p0, p1, ok = _pairs(kpts0, kpts1)
    if ok.sum() < 4:
        return None
    out = _opencv(cv2.findHomography, p0[ok], p1[ok], method=_flag(method), ransacReprojThreshold=float(threshold),
                  maxIters=int(max_iters), confidence=float(confidence))
    if out is None or not _valid_output(out[0], out[1], int(ok.sum()), 4) or _collinear(p0[ok], p1[ok], out[1]):
        return None
    H = np.asarray(out[0], dtype=np.float64)
    sv = np.linalg.svd(H, compute_uv=False)
    if abs(H[2, 2]) < 1e-12 or sv[-1] <= 1e-12 * sv[0]:
        return None
    return GeometryResult(H / H[2, 2], _expand(out[1], ok))


def estimate_fundamental(
    kpts0: Any, kpts1: Any, method: str = "magsac", threshold: float = 1.0,
    confidence: float = 0.99999, max_iters: int = 10000,
) -> GeometryResult | None:
    """Fundamental matrix F (3, 3), unit Frobenius norm, with kpts1^T F kpts0 = 0 (both (M, 2) pixels).

    ``threshold`` is the point-to-epipolar-line distance in pixels. None for fewer than 8 points, a failure or
    collinear inliers.
    """
    p0, p1, ok = _pairs(kpts0, kpts1)
    if ok.sum() < 8:
        return None
    # OpenCV 5: findFundamentalMat(points1, points2, method, ransacReprojThreshold, confidence, maxIters[, mask])
    out = _opencv(cv2.findFundamentalMat, p0[ok], p1[ok], _flag(method), float(threshold), float(confidence),
                  int(max_iters))
    if out is None or not _valid_output(out[0], out[1], int(ok.sum()), 8) or _collinear(p0[ok], p1[ok], out[1]):
        return None
    F = np.asarray(out[0], dtype=np.float64)[:3]  # several solutions are stacked only by the 7-point method
    norm = np.linalg.norm(F)
    if norm == 0:
        return None
    return GeometryResult(F / norm, _expand(out[1], ok))


def _essential_and_pose(
    kpts0: Any, kpts1: Any, K0: Any, K1: Any, threshold: float, confidence: float, method: str, max_iters: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(E, R, t, essential inliers (M,), chirality inliers (M,)) or None; see estimate_relative_pose."""
    p0, p1, ok = _pairs(kpts0, kpts1)
    if ok.sum() < 5:
        return None
    K0, K1 = as_numpy(K0), as_numpy(K1)
    n0, n1 = _normalise(p0[ok], K0), _normalise(p1[ok], K1)
    thr = float(threshold) / np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]])
    out = _opencv(cv2.findEssentialMat, n0, n1, np.eye(3), method=_flag(method), prob=float(confidence),
                  threshold=thr, maxIters=int(max_iters))
    if out is None or not _valid_output(out[0], out[1], len(n0), 5) or _collinear(n0, n1, out[1]):
        return None
    E_all, mask = np.asarray(out[0], dtype=np.float64), np.ascontiguousarray(out[1], dtype=np.uint8).reshape(-1, 1)
    best = None
    for E in np.split(E_all, len(E_all) // 3):  # the 5-point solver may return several candidates stacked
        if not np.linalg.norm(E) > 0:
            continue
        # distanceThresh must be a keyword: in OpenCV 5 a 5th positional argument selects the
        # (E, points1, points2, cameraMatrix[, R[, t[, mask]]]) overload and is silently taken as R.
        res = _opencv(cv2.recoverPose, E, n0, n1, np.eye(3), distanceThresh=1e9, mask=mask.copy())
        if res is not None and (best is None or res[0] > best[1][0]):
            best = (E, res)
    if best is None or best[1][0] <= 0:
        return None
    E, (_, R, t, chirality, _) = best
    R, t = np.asarray(R, dtype=np.float64), np.asarray(t, dtype=np.float64).ravel()
    if not (np.isfinite(R).all() and np.isfinite(t).all() and np.linalg.norm(t) > 0):
        return None
    return E / np.linalg.norm(E), R, t / np.linalg.norm(t), _expand(mask, ok), _expand(chirality, ok)


def estimate_essential(
    kpts0: Any, kpts1: Any, K0: Any, K1: Any, threshold: float = 0.5, confidence: float = 0.99999,
    method: str = "magsac", max_iters: int = 10000,
) -> GeometryResult | None:
    """Essential matrix E (3, 3), unit Frobenius norm, from (M, 2) pixel matches and intrinsics K0, K1 (3, 3).

    LoFTR/SuperGlue protocol: points are normalised by their K and the pixel ``threshold`` is divided by
    mean(fx0, fy0, fx1, fy1). When the solver returns several candidates, the one with the most points passing
    the chirality check is kept. ``inliers`` is the robust estimator's mask. None for fewer than 5 points or a
    degenerate result.
    """
    out = _essential_and_pose(kpts0, kpts1, K0, K1, threshold, confidence, method, max_iters)
    return None if out is None else GeometryResult(out[0], out[3])


def estimate_relative_pose(
    kpts0: Any, kpts1: Any, K0: Any, K1: Any, threshold: float = 0.5, confidence: float = 0.99999,
    method: str = "magsac", max_iters: int = 10000,
) -> PoseResult | None:
    """Relative pose (R (3, 3), unit t (3,)) from (M, 2) pixel matches, via the essential matrix (see
    estimate_essential) and cv2.recoverPose's chirality check (no far-point cut-off). ``inliers`` (M,) are the
    essential-matrix inliers in front of both cameras. None for fewer than 5 points or a degenerate result."""
    out = _essential_and_pose(kpts0, kpts1, K0, K1, threshold, confidence, method, max_iters)
    if out is None:
        return None
    E, R, t, _, chirality = out
    return PoseResult(R=R, t=t, inliers=chirality, essential=E)


# ---------------------------------------------------------------------------------------------------- metrics
def angle_error_rotation(R_est: Any, R_gt: Any) -> float:
    """Angle in degrees of the rotation R_est^T R_gt taking one (3, 3) rotation to the other."""
    cos = (np.trace(as_numpy(R_est).T @ as_numpy(R_gt)) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def angle_error_translation(t_est: Any, t_gt: Any, ignore_gt_t_thr: float = 0.0) -> float:
    """Angle in degrees between the (3,) translation directions, sign-agnostic: min(a, 180 - a).

    0 when ||t_gt|| <= ignore_gt_t_thr (pure rotation: no direction); 90 (the worst) for a zero t_est.
    """
    t_est, t_gt = as_numpy(t_est).ravel(), as_numpy(t_gt).ravel()
    if np.linalg.norm(t_gt) <= ignore_gt_t_thr:
        return 0.0
    n = np.linalg.norm(t_est) * np.linalg.norm(t_gt)
    if not n > 0:
        return 90.0
    angle = float(np.degrees(np.arccos(np.clip(t_est @ t_gt / n, -1.0, 1.0))))
    return min(angle, 180.0 - angle)


def pose_error(R_est: Any, t_est: Any, T_0to1: Any) -> tuple[float, float]:
    """(rotation error, translation-direction error) in degrees against the ground truth T_0to1 (4, 4) or (3, 4).

    The LoFTR/SuperGlue pose AUC uses max(err_R, err_t) per pair (inf for a failed estimate)."""
    T = as_numpy(T_0to1)
    return angle_error_rotation(R_est, T[:3, :3]), angle_error_translation(t_est, T[:3, 3])


def _error_auc(errors: Any, thresholds: Sequence[float]) -> dict[float, float]:
    """Area under the recall-vs-error curve up to each threshold, divided by it (in [0, 1]).

    The curve starts at (0, 0), steps up by 1/N at each sorted error (linear in between: trapezoid rule) and is
    flat after the last error below the threshold. Errors equal to a threshold count as above it.
    """
    e = as_numpy(errors).ravel()
    e = np.sort(np.where(np.isnan(e), np.inf, e))
    x = np.concatenate([[0.0], e])
    y = np.linspace(0.0, 1.0, len(x))
    aucs = {}
    for thr in thresholds:
        k = max(int(np.searchsorted(x, thr)), 1)
        xs, ys = np.append(x[:k], thr), np.append(y[:k], y[k - 1])
        aucs[thr] = float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0) / thr) if len(e) else 0.0
    return aucs


def pose_auc(errors: Any, thresholds: Sequence[float] = (5, 10, 20)) -> dict[float, float]:
    """SuperGlue/LoFTR pose AUC: {threshold (degrees): AUC in [0, 1]} of the (N,) per-pair errors."""
    return _error_auc(errors, thresholds)


def homography_auc(errors: Any, thresholds: Sequence[float] = (3, 5, 10)) -> dict[float, float]:
    """HPatches AUC: {threshold (pixels): AUC in [0, 1]} of the (N,) mean corner errors (same AUC as pose_auc)."""
    return _error_auc(errors, thresholds)


def warp_points_homography(kpts: Any, H: Any) -> np.ndarray:
    """(M, 2) points mapped by the homography H (3, 3); points sent to infinity come out non-finite."""
    h = _homogeneous(_points(kpts)) @ as_numpy(H).T
    with np.errstate(divide="ignore", invalid="ignore"):
        return h[:, :2] / h[:, 2:]


def homography_corner_error(H_est: Any, H_gt: Any, width: int, height: int) -> float:
    """Mean distance in pixels between the four image corners (0, 0), (w-1, 0), (w-1, h-1), (0, h-1) mapped by
    H_est and by H_gt; inf when H_est is None or sends a corner to infinity."""
    if H_est is None:
        return float("inf")
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float64)
    d = np.linalg.norm(warp_points_homography(corners, H_est) - warp_points_homography(corners, H_gt), axis=1)
    return float(d.mean()) if np.isfinite(d).all() else float("inf")


def _skew(t: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])


def essential_from_pose(R: Any, t: Any) -> np.ndarray:
    """E = [t]_x R (3, 3), so that x1^T E x0 = 0 for normalised points when X1 = R X0 + t."""
    return _skew(as_numpy(t).ravel()) @ as_numpy(R)


def fundamental_from_pose(R: Any, t: Any, K0: Any, K1: Any) -> np.ndarray:
    """F = K1^-T [t]_x R K0^-1 (3, 3), so that p1^T F p0 = 0 for pixel points."""
    return np.linalg.inv(as_numpy(K1)).T @ essential_from_pose(R, t) @ np.linalg.inv(as_numpy(K0))


def _line_distances(kpts0: Any, kpts1: Any, F: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(|residual| (M,), distance of p0 to F^T p1 (M,), distance of p1 to F p0 (M,), Sampson denominator (M,))."""
    p0, p1 = _points(kpts0), _points(kpts1)
    F = as_numpy(F)
    F = F / np.linalg.norm(F)  # every distance below is invariant to the scale of F
    h0, h1 = _homogeneous(p0), _homogeneous(p1)
    line1, line0 = h0 @ F.T, h1 @ F  # epipolar lines in image 1 and image 0
    r = np.abs(np.sum(h1 * line1, axis=1))
    n0, n1 = np.hypot(line0[:, 0], line0[:, 1]), np.hypot(line1[:, 0], line1[:, 1])
    return r, _safe_ratio(r, n0), _safe_ratio(r, n1), np.sqrt(n0**2 + n1**2)


def symmetric_epipolar_distance(kpts0: Any, kpts1: Any, F: Any) -> np.ndarray:
    """(M,) average of the two point-to-epipolar-line distances in pixels: (d(p0, F^T p1) + d(p1, F p0)) / 2.

    Zero for exact correspondences; moving p1 by d off its line in a rectified pair gives d."""
    _, d0, d1, _ = _line_distances(kpts0, kpts1, F)
    return (d0 + d1) / 2.0


def sampson_distance(kpts0: Any, kpts1: Any, F: Any) -> np.ndarray:
    """(M,) Sampson distance in pixels: sqrt of the first-order geometric error
    (p1^T F p0)^2 / ((F p0)_x^2 + (F p0)_y^2 + (F^T p1)_x^2 + (F^T p1)_y^2).

    It spreads the correction over both images: p1 moved by d off its line in a rectified pair gives d / sqrt(2)."""
    r, _, _, den = _line_distances(kpts0, kpts1, F)
    return _safe_ratio(r, den)


def epipolar_error_normalized(kpts0: Any, kpts1: Any, T_0to1: Any, K0: Any, K1: Any) -> np.ndarray:
    """(M,) LoFTR's ``compute_symmetrical_epipolar_errors``: d(x0, E^T x1)^2 + d(x1, E x0)^2 with x the points
    normalised by K and E from the ground-truth T_0to1 (4, 4). A squared, normalised-coordinate quantity: LoFTR
    counts a match as correct below 5e-4 (ScanNet) or 1e-4 (MegaDepth)."""
    T = as_numpy(T_0to1)
    E = essential_from_pose(T[:3, :3], T[:3, 3])
    x0, x1 = _normalise(_points(kpts0), as_numpy(K0)), _normalise(_points(kpts1), as_numpy(K1))
    _, d0, d1, _ = _line_distances(x0, x1, E)
    return d0**2 + d1**2


def reproject_with_depth(kpts0: Any, depth0: Any, K0: Any, K1: Any, T_0to1: Any) -> tuple[np.ndarray, np.ndarray]:
    """Warps (M, 2) image-0 pixels into image 1 with the depth map depth0 (H, W) read at the rounded pixel.

    Returns kpts1 (M, 2) and valid (M,) bool; invalid (outside the map, depth 0 / non-finite / negative, or behind
    camera 1) rows of kpts1 are NaN."""
    p, D = _points(kpts0), as_numpy(depth0)
    K0, K1, T = as_numpy(K0), as_numpy(K1), as_numpy(T_0to1)
    height, width = D.shape[-2:]
    D = D.reshape(height, width)
    finite = np.isfinite(p).all(1)
    ix = np.round(np.where(finite, p[:, 0], -1)).astype(np.int64)
    iy = np.round(np.where(finite, p[:, 1], -1)).astype(np.int64)
    valid = finite & (ix >= 0) & (ix < width) & (iy >= 0) & (iy < height)
    z = np.zeros(len(p))
    z[valid] = D[iy[valid], ix[valid]]
    valid &= np.isfinite(z) & (z > 0)
    X0 = (_homogeneous(np.where(valid[:, None], p, 0.0)) @ np.linalg.inv(K0).T) * z[:, None]
    X1 = X0 @ T[:3, :3].T + T[:3, 3]
    valid &= X1[:, 2] > 0
    kpts1 = np.full((len(p), 2), np.nan)
    h = X1[valid] @ K1.T
    kpts1[valid] = h[:, :2] / h[:, 2:]
    return kpts1, valid
