"""Tiny synthetic scenes for the training tests: textured planes seen by pinhole cameras, with exact depth, and
writers of the ScanNet / MegaDepth file layouts around them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

from ..eval.scenes import rotation  # noqa: F401  (re-exported for the training tests)
from ..eval.scenes import world_to_camera as pose  # noqa: F401

K160 = np.array([[140.0, 0.0, 79.5], [0.0, 140.0, 59.5], [0.0, 0.0, 1.0]])  # a 160x120 camera
SIZE = (160, 120)


def grey_texture(name: str, side: int = 512) -> np.ndarray:
    img = getattr(skdata, name)()
    if img.ndim == 3:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2GRAY)
    return cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


@dataclass(frozen=True)
class Plane:
    """Points origin + a*u + b*v (a, b in metres; 0 <= a, b <= extent when bounded), textured at px_per_m."""

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    texture: np.ndarray
    px_per_m: float = 100.0
    extent: tuple[float, float] | None = None

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.u, self.v)


def render(planes: list[Plane], T_w2c: np.ndarray, K: np.ndarray = K160,
           size: tuple[int, int] = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(grey image float32 in [0, 1], depth float32 metres with 0 where nothing is seen) by ray casting; pixel (x, y)
    is centred at (x, y)."""
    w, h = size
    R, t = T_w2c[:3, :3], T_w2c[:3, 3]
    centre = -R.T @ t
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays_cam = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T  # camera z = 1
    rays = rays_cam @ R  # world directions; the ray parameter is the camera depth
    image = np.zeros((h, w), np.float32)
    depth = np.full((h, w), np.inf)
    for plane in planes:
        n = plane.normal
        denom = rays @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            s = ((plane.origin - centre) @ n) / denom
        hit = centre + s[..., None] * rays
        a = (hit - plane.origin) @ plane.u
        b = (hit - plane.origin) @ plane.v
        seen = np.isfinite(s) & (s > 0)
        if plane.extent is not None:
            seen &= (a >= 0) & (a <= plane.extent[0]) & (b >= 0) & (b <= plane.extent[1])
        closer = seen & (s < depth)
        tex = cv2.remap(plane.texture, (a * plane.px_per_m).astype(np.float32), (b * plane.px_per_m).astype(np.float32),
                        cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        image[closer] = tex[closer]
        depth[closer] = s[closer]
    return image, np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)


def plane_homography(K0: np.ndarray, K1: np.ndarray, T0: np.ndarray, T1: np.ndarray, plane: Plane) -> np.ndarray:
    """Homography of view 0 pixels to view 1 pixels induced by an (unbounded) plane."""
    n = plane.normal
    d = float(n @ plane.origin)  # plane: n . X = d (world)
    n0 = T0[:3, :3] @ n
    d0 = d + n0 @ T0[:3, 3]
    T = T1 @ np.linalg.inv(T0)
    H = K1 @ (T[:3, :3] + np.outer(T[:3, 3], n0) / d0) @ np.linalg.inv(K0)
    return H / H[2, 2]


def wall(z: float = 3.0, texture: str = "camera") -> Plane:
    """An unbounded textured wall z = const facing the cameras."""
    return Plane(np.array([-2.0, -2.0, z]), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]),
                 grey_texture(texture))


def board(z: float = 2.0, half: float = 0.3, texture: str = "astronaut") -> Plane:
    """A bounded square (an occluder) centred on the optical axis."""
    return Plane(np.array([-half, -half, z]), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]),
                 grey_texture(texture), px_per_m=400.0, extent=(2 * half, 2 * half))


CAMERAS = (  # world-to-camera poses of a short trajectory in front of the wall
    pose(np.eye(3), np.zeros(3)),
    pose(rotation("y", -8.0) @ rotation("x", 3.0), np.array([0.25, -0.1, 0.2])),
    pose(rotation("y", 6.0), np.array([-0.2, 0.05, -0.1])),
)


def write_scannet(root: Path, planes: list[Plane], poses=CAMERAS, scene: str = "scene0007_00",
                  pairs=((0, 1, 0.9), (1, 2, 0.3), (0, 2, 0.6))) -> tuple[Path, Path]:
    """ScanNet layout: root/data/scene/{color/i.jpg, depth/i.png (mm), pose/i.txt (camera-to-world)},
    root/index/intrinsics.npz and root/index/scene_data/train/scene.npz; returns (data root, index folder)."""
    data = root / "data" / scene
    for sub in ("color", "depth", "pose"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    for k, T in enumerate(poses):
        img, depth = render(planes, T)
        cv2.imwrite(str(data / "color" / f"{k}.jpg"), (img * 255).round().astype(np.uint8),
                    [cv2.IMWRITE_JPEG_QUALITY, 98])
        cv2.imwrite(str(data / "depth" / f"{k}.png"), (depth * 1000).round().astype(np.uint16))
        np.savetxt(data / "pose" / f"{k}.txt", np.linalg.inv(T))
    index = root / "index" / "scene_data" / "train"
    index.mkdir(parents=True)
    sid, sub = int(scene[5:9]), int(scene[10:12])
    np.savez(index / f"{scene}.npz", name=np.array([[sid, sub, a, b] for a, b, _ in pairs]),
             score=np.array([s for *_, s in pairs]))
    np.savez(root / "index" / "intrinsics.npz", **{scene: K160})
    return root / "data", index


def write_megadepth(root: Path, planes: list[Plane], poses=CAMERAS,
                    pairs=((0, 1, 0.5), (1, 2, 0.0), (0, 2, 0.4))) -> Path:
    """MegaDepth layout: images/depths under root, a scene-info npz of object arrays; returns the npz path."""
    import h5py

    (root / "Undistorted_SfM/0001/images").mkdir(parents=True)
    (root / "phoenix/MegaDepth_v1/0001/dense0/depths").mkdir(parents=True)
    image_paths, depth_paths = [], []
    for k, T in enumerate(poses):
        img, depth = render(planes, T)
        image_paths.append(f"Undistorted_SfM/0001/images/{k}.jpg")
        depth_paths.append(f"phoenix/MegaDepth_v1/0001/dense0/depths/{k}.h5")
        cv2.imwrite(str(root / image_paths[-1]), (img * 255).round().astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 98])
        with h5py.File(root / depth_paths[-1], "w") as f:
            f.create_dataset("depth", data=depth)

    def objects(items: list) -> np.ndarray:
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out

    info = root / "scene_info" / "0001_0.1_0.7.npz"
    info.parent.mkdir()
    np.savez(info, image_paths=objects(image_paths), depth_paths=objects(depth_paths),
             intrinsics=objects([K160.copy() for _ in poses]), poses=objects([T.copy() for T in poses]),
             pair_infos=objects([((a, b), s, np.zeros(3)) for a, b, s in pairs]))
    return info
