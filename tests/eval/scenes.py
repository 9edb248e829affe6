"""Small generated data for the evaluation tests: real textures (scikit-image's bundled photos), a rendered
4-plane room seen by two cameras, homography pairs, and a PFM writer independent of the reader under test."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

PX_PER_M = 60.0  # texture pixels per metre of wall
K_TINY = np.array([[80.0, 0.0, 79.5], [0.0, 80.0, 59.5], [0.0, 0.0, 1.0]])  # a wide-angle 160x120 camera


def texture(name: str, size: tuple[int, int]) -> np.ndarray:
    """A bundled scikit-image photo as a grey (H, W) uint8 image resized to size = (W, H)."""
    img = getattr(skdata, name)()
    if img.ndim == 3:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2GRAY)
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def rotation(axis: str, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def world_to_camera(R: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(4, 4) world-to-camera pose of a camera with orientation R (camera axes in world, rows) at ``centre``."""
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, -R @ centre
    return T


# the room: back wall z = 2.5, side walls x = +-1, floor y = 0.8 (y points down); each plane's texture axes
_PLANES = (
    (np.array([0.0, 0.0, 1.0]), 2.5, ("astronaut", 0, 1)),
    (np.array([1.0, 0.0, 0.0]), 1.0, ("coffee", 2, 1)),
    (np.array([-1.0, 0.0, 0.0]), 1.0, ("rocket", 2, 1)),
    (np.array([0.0, 1.0, 0.0]), 0.8, ("chelsea", 0, 2)),
)


def render(T_w2c: np.ndarray, K: np.ndarray = K_TINY, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """Grey (H, W) uint8 view of the textured room by a camera with world-to-camera pose T_w2c (4, 4)."""
    return render_with_depth(T_w2c, K, size)[0]


def render_with_depth(T_w2c: np.ndarray, K: np.ndarray = K_TINY, size: tuple[int, int] = (160, 120),
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The view (H, W) uint8 and its depth (H, W): camera-frame z of the surface seen at each pixel centre."""
    w, h = size
    R, t = T_w2c[:3, :3], T_w2c[:3, 3]
    centre = -R.T @ t
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T @ R  # world directions (H, W, 3)
    best_t = np.full((h, w), np.inf)
    out = np.zeros((h, w))
    for normal, offset, (name, u_axis, v_axis) in _PLANES:
        denom = rays @ normal
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = (offset - centre @ normal) / denom
        hit = (dist > 0) & (dist < best_t)
        X = centre + rays * dist[..., None]
        tex = texture(name, (256, 256)).astype(np.float32)
        u = (X[..., u_axis] * PX_PER_M + 128.0).astype(np.float32)
        v = (X[..., v_axis] * PX_PER_M + 128.0).astype(np.float32)
        sample = cv2.remap(tex, np.nan_to_num(u), np.nan_to_num(v), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        out[hit], best_t[hit] = sample[hit], dist[hit]
    depth = best_t * (rays @ R.T)[..., 2]
    return np.clip(out, 0, 255).astype(np.uint8), depth


def project(points: np.ndarray, T_w2c: np.ndarray, K: np.ndarray = K_TINY) -> np.ndarray:
    """(N, 3) world points → (N, 2) pixels of the camera."""
    X = points @ T_w2c[:3, :3].T + T_w2c[:3, 3]
    x = X @ K.T
    return x[:, :2] / x[:, 2:]


def backproject(pixels: np.ndarray, depth: np.ndarray, T_w2c: np.ndarray, K: np.ndarray = K_TINY) -> np.ndarray:
    """(N, 2) integer pixels with their depth map (H, W) → (N, 3) world points."""
    z = depth[pixels[:, 1].astype(int), pixels[:, 0].astype(int)]
    X_cam = np.c_[pixels, np.ones(len(pixels))] @ np.linalg.inv(K).T * z[:, None]
    return (X_cam - T_w2c[:3, 3]) @ T_w2c[:3, :3]


# second cameras (centre, yaw degrees) whose relative pose SIFT recovers within ~8 degrees at 160x120 whether
# the views are stored as PNG or JPEG (RANSAC on ~60 matches of tiny images fails badly for many other motions)
MOTIONS = (((0.42, 0.0, 0.0), -8.0), ((0.35, -0.14, -0.28), -6.0))


def room_pose(motion: int) -> np.ndarray:
    """World-to-camera pose (4, 4) of the second camera of MOTIONS[motion]; the first is the identity."""
    centre, yaw = MOTIONS[motion]
    return world_to_camera(rotation("y", yaw) @ rotation("x", 2.0), np.array(centre))


def gt_correspondences(T0: np.ndarray, T1: np.ndarray, step: int = 12) -> np.ndarray:
    """(N, 4) x0 y0 x1 y1 ground-truth correspondences on a grid of view 0 that land inside view 1."""
    _, depth0 = render_with_depth(T0)
    ys, xs = np.mgrid[6:120:step, 6:160:step]
    p0 = np.c_[xs.ravel(), ys.ravel()].astype(np.float64)
    p1 = project(backproject(p0, depth0, T0), T1)
    inside = (p1[:, 0] >= 0) & (p1[:, 0] <= 159) & (p1[:, 1] >= 0) & (p1[:, 1] <= 119)
    return np.c_[p0, p1][inside]


def homography_pair(name: str, size: tuple[int, int], H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image0, image1): a texture and its warp by H (image0 pixels → image1 pixels)."""
    img0 = texture(name, size)
    return img0, cv2.warpPerspective(img0, H, size, flags=cv2.INTER_LINEAR)


def write_pfm(path: Path, image: np.ndarray, little_endian: bool = True) -> Path:
    """Writes a (H, W) or (H, W, 3) float array as PFM (rows bottom to top)."""
    image = np.asarray(image, np.float32)
    kind = "PF" if image.ndim == 3 else "Pf"
    h, w = image.shape[:2]
    scale = -1.0 if little_endian else 1.0
    body = np.ascontiguousarray(image[::-1]).astype("<f4" if little_endian else ">f4").tobytes()
    path.write_bytes(f"{kind}\n{w} {h}\n{scale}\n".encode() + body)
    return path
