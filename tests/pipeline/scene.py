"""A rendered scene with exact geometry for the SfM tests: textured rectangles at several depths and orientations,
seen by cameras of known K, R, t, with the exact correspondences between any two views.

Conventions: world and camera frames x right, y down, z forward; ``x_cam = R @ X + t``; pixel centres at integers
(the package's convention; COLMAP's +0.5 is the pipeline's business). Rendering is plain ray casting (nearest
rectangle along each pixel's ray, its texture sampled bilinearly), so a pixel's scene point is known exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Rect:
    """A textured rectangle ``origin + u * a + v * b``, u, v in [0, 1]; ``texture`` (H, W) float in [0, 1]."""

    origin: np.ndarray
    a: np.ndarray
    b: np.ndarray
    texture: np.ndarray


@dataclass(frozen=True)
class View:
    K: np.ndarray  # (3, 3)
    R: np.ndarray  # (3, 3) world → camera
    t: np.ndarray  # (3,)
    size: tuple[int, int]  # (W, H)

    @property
    def center(self) -> np.ndarray:
        return -self.R.T @ self.t

    def rays(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3) world directions of the rays through (N, 2) pixels."""
        h = np.concatenate([pixels, np.ones((len(pixels), 1))], 1)
        return (self.R.T @ np.linalg.solve(self.K, h.T)).T

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) pixels and (N,) depths of (N, 3) world points."""
        cam = points @ self.R.T + self.t
        uv = cam @ self.K.T
        return uv[:, :2] / uv[:, 2:3], cam[:, 2]


def _textures() -> list[np.ndarray]:
    from skimage import color, data

    out = []
    for img in (data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.brick(), data.gravel()):
        g = color.rgb2gray(img) if img.ndim == 3 else img / 255.0
        out.append(np.asarray(g, np.float64))
    return out


def scene() -> list[Rect]:
    """A back wall, a floor, a box (front and side) and a slanted panel: depth 5 to 12 units, five orientations."""
    tex = _textures()
    v = np.array
    return [
        Rect(v([-7.0, -4.5, 12.0]), v([14.0, 0, 0]), v([0, 7.0, 0]), tex[0]),  # back wall
        Rect(v([-7.0, 2.5, 3.0]), v([14.0, 0, 0]), v([0, 0, 9.0]), tex[4]),  # floor
        Rect(v([-3.0, -1.0, 6.0]), v([2.5, 0, 0]), v([0, 3.5, 0]), tex[1]),  # box front
        Rect(v([-0.5, -1.0, 6.0]), v([0, 0, 2.5]), v([0, 3.5, 0]), tex[2]),  # box side
        Rect(v([1.0, -3.0, 8.5]), v([2.5, 0, -1.5]), v([0, 4.0, 0.5]), tex[3]),  # slanted panel
    ]


def cast(rects: list[Rect], origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of each ray ``origin + s * dirs``: (N,) parameter s (inf = none), (N,) rectangle index (-1) and
    (N, 2) texture coordinates (u, v)."""
    n = len(dirs)
    best, which, uv = np.full(n, np.inf), np.full(n, -1), np.zeros((n, 2))
    for k, r in enumerate(rects):
        normal = np.cross(r.a, r.b)
        denom = dirs @ normal
        with np.errstate(divide="ignore", invalid="ignore"):
            s = ((r.origin - origin) @ normal) / denom
        p = origin + s[:, None] * dirs - r.origin
        u, w = p @ r.a / (r.a @ r.a), p @ r.b / (r.b @ r.b)
        hit = (s > 1e-6) & (u >= 0) & (u <= 1) & (w >= 0) & (w <= 1) & (s < best)
        best[hit], which[hit], uv[hit] = s[hit], k, np.stack([u[hit], w[hit]], 1)
    return best, which, uv


def render(rects: list[Rect], view: View) -> np.ndarray:
    """(H, W) uint8 grey image of the scene (mid-grey where no rectangle is hit)."""
    w, h = view.size
    ys, xs = np.mgrid[0:h, 0:w]
    pix = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    s, which, uv = cast(rects, view.center, view.rays(pix))
    out = np.full(len(pix), 0.5)
    for k, r in enumerate(rects):
        sel = which == k
        th, tw = r.texture.shape
        x, y = uv[sel, 0] * (tw - 1), uv[sel, 1] * (th - 1)
        x0, y0 = np.clip(np.floor(x).astype(int), 0, tw - 2), np.clip(np.floor(y).astype(int), 0, th - 2)
        fx, fy = x - x0, y - y0
        t = r.texture
        out[sel] = ((1 - fx) * (1 - fy) * t[y0, x0] + fx * (1 - fy) * t[y0, x0 + 1] + (1 - fx) * fy * t[y0 + 1, x0]
                    + fx * fy * t[y0 + 1, x0 + 1])
    return np.clip(out.reshape(h, w) * 255 + 0.5, 0, 255).astype(np.uint8)


def look_at(center: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) of a camera at ``center`` looking at ``target``, y down."""
    z = target - center
    z = z / np.linalg.norm(z)
    x = np.cross(np.array([0.0, 1.0, 0.0]), z)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ center


def views(n: int = 7, size: tuple[int, int] = (400, 300), focal: float = 330.0,
          principal: tuple[float, float] | None = None, roll: float = 0.0) -> list[View]:
    """``n`` cameras along a gentle arc (2.4 units side to side, some forward motion), all aimed at the box;
    ``principal``: the principal point (default: the image centre); ``roll``: the cameras turn about their optical
    axes from -roll to +roll degrees along the arc."""
    w, h = size
    cx, cy = ((w - 1) / 2, (h - 1) / 2) if principal is None else principal
    K = np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1.0]])
    out = []
    for i in range(n):
        f = i / (n - 1) - 0.5
        center = np.array([2.4 * f, -0.4 + 0.3 * f * f, 0.8 * f * f + 0.6 * f])
        R, t = look_at(center, np.array([0.0, 0.3, 8.0]))
        a = np.radians(2 * f * roll)
        R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]]) @ R
        out.append(View(K, R, -R @ center, size))
    return out


def correspondences(rects: list[Rect], v0: View, v1: View, pixels0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact matches of ``pixels0`` (N, 2) of view 0 in view 1: (indexes into pixels0, (M, 2) pixels of view 1) for
    the pixels whose scene point view 1 sees (inside the image, not occluded)."""
    s, which, _ = cast(rects, v0.center, v0.rays(pixels0))
    hit = np.flatnonzero(np.isfinite(s))
    X = v0.center + s[hit, None] * v0.rays(pixels0[hit])
    p1, depth = v1.project(X)
    w, h = v1.size
    inside = (depth > 0) & (p1[:, 0] >= 0) & (p1[:, 0] <= w - 1) & (p1[:, 1] >= 0) & (p1[:, 1] <= h - 1)
    d = X - v1.center
    s1, _, _ = cast(rects, v1.center, d)
    visible = inside & (np.abs(s1 - 1.0) < 1e-6)  # the first hit from view 1 is the point itself
    return hit[visible], p1[visible]
