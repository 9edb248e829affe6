"""Extreme-view homographies for training: a photo crop seen as a plane by a second, virtual camera that is tilted
by up to ~75° about a random axis in the plane, zooms in or out up to 4×, and rolls about its optical axis.

Geometry (pixel-centre convention: pixel (x, y) covers [x - 0.5, x + 0.5], a ``size``-pixel side is centred at
(size - 1) / 2). The crop (image0) is the plane z = 0 in its own pixel units, seen fronto-parallel. Camera 1 (focal
f from its field of view, principal point at the centre of image1) looks at a point P of the crop from distance d,
its viewing direction tilted by θ about the in-plane axis (cos φ, sin φ), then rolled by ψ. Its homography image0 →
image1 is K [r1 r2 t]. At P (which lands at image1's centre) the local affine map is

    J = (f / d) R(ψ) R(φ) diag(1, cos θ) R(-φ),

so its singular values are f/d and f cos θ / d (tilt θ = arccos of their ratio), its area scale sqrt(det J) is the
drawn zoom (d = f sqrt(cos θ) / zoom) and its rotation (polar factor) is the roll ψ; :func:`view_geometry` reads the
three back from any local affine map. A close-up at a grazing angle leaves part of the crop behind camera 1: the
homography (det > 0) gives those points w < 0, and the supervision and :func:`render_view` treat them as unseen
(a homography alone would also map them, mirrored, into the image).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ExtremeWarp:
    """How extreme views are drawn: tilt θ uniform in [0, ``max_tilt``] degrees about a uniform axis, zoom
    log-uniform in [1 / ``max_scale``, ``max_scale``] (area scale at the look-at point), roll uniform in
    ±``max_rotation`` degrees, field of view of camera 1 uniform in ``fov`` degrees (narrow: nearly affine, wide:
    strong perspective), look-at point uniform in the central ``look_at`` fraction of the crop. A draw whose
    :func:`covisible_share` is below ``min_covisible`` is redrawn (up to ``tries`` times)."""

    max_tilt: float = 75.0
    max_scale: float = 4.0
    max_rotation: float = 45.0
    fov: tuple[float, float] = (35.0, 75.0)
    look_at: float = 0.5
    min_covisible: float = 0.05
    tries: int = 100

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_tilt < 85.0:
            raise ValueError(f"max_tilt must be in [0, 85) degrees, got {self.max_tilt}")
        if self.max_scale < 1.0:
            raise ValueError(f"max_scale must be at least 1, got {self.max_scale}")
        if not 0.0 <= self.max_rotation <= 180.0:
            raise ValueError(f"max_rotation must be in [0, 180] degrees, got {self.max_rotation}")
        if not 0.0 < self.fov[0] <= self.fov[1] < 150.0:
            raise ValueError(f"fov must be an increasing range inside (0, 150) degrees, got {self.fov}")
        if not 0.0 <= self.look_at <= 1.0 or not 0.0 <= self.min_covisible < 1.0 or self.tries < 1:
            raise ValueError("look_at and min_covisible must be fractions and tries at least 1")


def _rotation2(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def camera_homography(size: int, look_at: tuple[float, float], tilt: float, axis: float, zoom: float, roll: float,
                      fov: float) -> np.ndarray:
    """(3, 3) homography image0 → image1 (both ``size``²) of camera 1 looking at ``look_at`` (image0 pixels); angles
    in degrees, ``zoom`` the area scale at the look-at point (> 1: image1 is a close-up). Its det is positive and
    w > 0 exactly for the plane points in front of camera 1."""
    theta, phi, psi = np.deg2rad([tilt, axis, roll])
    f = (size / 2.0) / np.tan(np.deg2rad(fov) / 2.0)
    d = f * np.sqrt(np.cos(theta)) / zoom
    a = np.array([np.cos(phi), np.sin(phi), 0.0])
    R = cv2.Rodrigues(a * theta)[0]  # camera 1 to world; the fronto camera is the identity (x right, y down, z in)
    centre = np.array([look_at[0], look_at[1], 0.0]) - R @ np.array([0.0, 0.0, d])
    w2c = R.T
    c = (size - 1) / 2.0
    K = np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])
    H_cam = K @ np.column_stack([w2c[:, 0], w2c[:, 1], -w2c @ centre])
    spin = np.eye(3)
    spin[:2, :2] = _rotation2(psi)
    spin[:2, 2] = np.array([c, c]) - spin[:2, :2] @ np.array([c, c])
    return spin @ H_cam


def local_affine(H: np.ndarray, point: tuple[float, float]) -> np.ndarray:
    """(2, 2) Jacobian of the homography ``H`` at ``point`` (x, y)."""
    p = np.array([point[0], point[1], 1.0])
    q = H @ p
    x = q[:2] / q[2]
    return (H[:2, :2] - np.outer(x, H[2, :2])) / q[2]


def view_geometry(A: np.ndarray) -> tuple[float, float, float]:
    """(zoom, tilt, rotation) of a local affine map (2, 2): area scale sqrt(det), arccos of the ratio of its singular
    values in degrees, and the angle of its rotation (polar) factor in degrees."""
    U, s, Vt = np.linalg.svd(A)
    Q = U @ Vt
    if np.linalg.det(Q) < 0:
        raise ValueError("the affine map flips the image: not a view of the plane from its front")
    return float(np.sqrt(s[0] * s[1])), float(np.degrees(np.arccos(min(s[1] / s[0], 1.0)))), \
        float(np.degrees(np.arctan2(Q[1, 0], Q[0, 0])))


def _grid(size: int, n: int = 48) -> np.ndarray:
    t = (np.arange(n) + 0.5) * size / n - 0.5
    xs, ys = np.meshgrid(t, t)
    return np.stack([xs.ravel(), ys.ravel(), np.ones(n * n)], 0)


def covisible_share(H: np.ndarray, size: int) -> float:
    """The smaller of two shares (measured on a 48² grid of each ``size``² image): of image0 that lands inside image1
    in front of camera 1, and of image1 that shows image0. Times the number of coarse cells, about the most
    ground-truth matches a pair can have (a cell of the coarser side matches at most one)."""
    def inside(q: np.ndarray) -> np.ndarray:
        front = q[2] > 1e-9
        xy = q[:2] / np.where(front, q[2], 1.0)
        return front & (xy > -0.5).all(0) & (xy < size - 0.5).all(0)

    grid = _grid(size)
    return float(min(inside(H @ grid).mean(), inside(np.linalg.inv(H) @ grid).mean()))


def sample_extreme(rng: np.random.Generator, size: int, cfg: ExtremeWarp = ExtremeWarp()) -> np.ndarray:
    """A (3, 3) extreme-view homography image0 → image1 of a ``size``² crop whose :func:`covisible_share` is at least
    ``cfg.min_covisible``. After ``cfg.tries`` rejected draws, the last draw's roll with neither tilt nor zoom."""
    lo, hi = (1.0 - cfg.look_at) / 2.0 * (size - 1), (1.0 + cfg.look_at) / 2.0 * (size - 1)
    roll = 0.0
    for _ in range(cfg.tries):
        look_at = (rng.uniform(lo, hi), rng.uniform(lo, hi))
        tilt, axis = rng.uniform(0.0, cfg.max_tilt), rng.uniform(0.0, 180.0)
        zoom = float(np.exp(rng.uniform(-np.log(cfg.max_scale), np.log(cfg.max_scale))))
        roll, fov = rng.uniform(-cfg.max_rotation, cfg.max_rotation), rng.uniform(*cfg.fov)
        H = camera_homography(size, look_at, tilt, axis, zoom, roll, fov)
        if covisible_share(H, size) >= cfg.min_covisible:
            return H
    c = (size - 1) / 2.0
    return camera_homography(size, (c, c), 0.0, 0.0, 1.0, roll, float(np.mean(cfg.fov)))


def render_view(photo: np.ndarray, H: np.ndarray, size: int, max_supersample: int = 4
                ) -> tuple[np.ndarray, np.ndarray]:
    """Image1 (size, size) float32 and its valid pixels (bool) of a grey float ``photo`` (h, w) seen through ``H``
    (photo pixels → image1 pixels, w > 0 in front of the camera): rendered at up to ``max_supersample``× and
    area-averaged down where the view shrinks the photo (a camera integrates, a bilinear warp would alias); valid
    where the pixel's ray meets the photo in front of the camera (0 elsewhere)."""
    h, w = photo.shape
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
    back = np.einsum("ij,jhw->ihw", np.linalg.inv(H), np.stack([xs, ys, np.ones_like(xs)]))
    front = back[2] > 1e-12
    px, py = back[0] / np.where(front, back[2], 1.0), back[1] / np.where(front, back[2], 1.0)
    valid = front & (px > -0.5) & (py > -0.5) & (px < w - 0.5) & (py < h - 0.5)
    step = max(size // 8, 1)  # photo pixels per image1 pixel, at most, over a grid of the valid pixels
    spread = [np.linalg.norm(local_affine(np.linalg.inv(H), (x, y)), 2)
              for y in range(step // 2, size, step) for x in range(step // 2, size, step) if valid[y, x]]
    m = int(np.clip(np.ceil(max(spread, default=1.0) - 1e-6), 1, max_supersample))
    D = np.array([[m, 0.0, (m - 1) / 2.0], [0.0, m, (m - 1) / 2.0], [0.0, 0.0, 1.0]])  # image1 → its m× version
    big = cv2.warpPerspective(photo, D @ H, (size * m, size * m), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
    image = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA) if m > 1 else big
    return np.where(valid, image, 0.0).astype(np.float32), valid
