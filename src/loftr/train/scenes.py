"""Synthetic 3D training pairs with exact dense depth: textured boxes and planes seen by two pinhole cameras.

Homographies of photos teach no parallax, occlusion or strong perspective. Here every pair is a small 3D world —
a room with furniture (indoor), buildings on a ground plane (outdoor), a cluster of objects walked around (object),
or one textured plane under an extreme view (plane) — rendered by ray casting from two cameras with wide baselines,
rotations about the scene, roll, focal and distance changes (scale up to about 4×) and per-face lighting changes.
Textures are random crops of the photos (some flattened to low texture, as walls are). Each view comes with its
exact depth at every pixel centre, so pairs go through the depth + pose supervision with its occlusion check
(:class:`~loftr.train.datasets.DepthPairSample`), exactly like ScanNet/MegaDepth pairs.

Conventions: world z is up; cameras are OpenCV (x right, y down, z forward), ``x_cam = R @ X + t``; pixel (x, y) is
centred at (x, y). A pair is a pure function of (seed, index).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .data import PhotoCache, photometric
from .datasets import DepthPairSample, collate_depth

KINDS = ("indoor", "outdoor", "object", "plane")
DEFAULT_MIX = (0.3, 0.25, 0.3, 0.15)  # share of each kind


@dataclass(frozen=True)
class Quad:
    """A textured rectangle ``origin + a * e1 + b * e2``, 0 <= a, b <= 1; the texture repeats every ``period``
    metres along e1 (its aspect kept); ``albedo`` scales its brightness."""

    origin: np.ndarray  # (3,)
    e1: np.ndarray  # (3,)
    e2: np.ndarray  # (3,)
    texture: int  # index into the scene's textures
    period: float
    albedo: float = 1.0

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.e1, self.e2)
        return n / np.linalg.norm(n)


@dataclass(frozen=True)
class Camera:
    K: np.ndarray  # (3, 3)
    R: np.ndarray  # (3, 3) world → camera
    t: np.ndarray  # (3,)

    @property
    def centre(self) -> np.ndarray:
        return -self.R.T @ self.t

    def w2c(self) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = self.R, self.t
        return T


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) of a camera at ``eye`` looking at ``target`` with world z up, rolled by ``roll`` radians."""
    f = target - eye
    f = f / np.linalg.norm(f)
    up = np.array([0.0, 0.0, 1.0])
    r = np.cross(f, up)
    if np.linalg.norm(r) < 1e-6:  # looking straight up or down
        r = np.cross(f, np.array([0.0, 1.0, 0.0]))
    r = r / np.linalg.norm(r)
    d = np.cross(f, r)
    R = np.stack([r, d, f])
    c, s = np.cos(roll), np.sin(roll)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ R
    return R, -R @ eye


def box(centre: np.ndarray, size: np.ndarray, yaw: float, textures: list[int], periods: list[float],
        albedos: list[float], bottom: bool = False) -> list[Quad]:
    """The faces of a box (sizes along its own x, y, z; rotated by ``yaw`` about z), normals pointing out."""
    c, s = np.cos(yaw), np.sin(yaw)
    ax = np.array([c, s, 0.0]) * size[0]
    ay = np.array([-s, c, 0.0]) * size[1]
    az = np.array([0.0, 0.0, 1.0]) * size[2]
    o = centre - (ax + ay + az) / 2
    faces = [(o, ay, ax), (o + az, ax, ay),  # bottom (normal -z), top (+z)
             (o, ax, az), (o + ay, az, ax),  # -y side, +y side
             (o, az, ay), (o + ax, ay, az)]  # -x side, +x side
    quads = []
    for k, (origin, e1, e2) in enumerate(faces):
        if k == 0 and not bottom:
            continue
        quads.append(Quad(origin, e1, e2, textures[k % len(textures)], periods[k % len(periods)],
                          albedos[k % len(albedos)]))
    return quads


def _mip(texture: np.ndarray, level: int) -> np.ndarray:
    for _ in range(level):
        if min(texture.shape) < 16:
            break
        texture = cv2.pyrDown(texture)
    return texture


def cast(quads: list[Quad], cam: Camera, size: tuple[int, int], supersample: int = 1
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ray cast: (depth (H, W) float64, inf where nothing is hit; index of the visible quad (H, W), -1 for none;
    its coordinates a, b (H, W)) at ``supersample``² samples per pixel of ``size`` (W, H)."""
    w, h = size[0] * supersample, size[1] * supersample
    offs = (np.arange(w) + 0.5) / supersample - 0.5, (np.arange(h) + 0.5) / supersample - 0.5
    xs, ys = np.meshgrid(offs[0], offs[1])
    rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(cam.K).T @ cam.R  # world; parameter = cam z
    centre = cam.centre
    depth = np.full((h, w), np.inf)
    index = np.full((h, w), -1, np.int32)
    coord_a = np.zeros((h, w))
    coord_b = np.zeros((h, w))
    for k, q in enumerate(quads):
        n = np.cross(q.e1, q.e2)
        denom = rays @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            s = ((q.origin - centre) @ n) / denom
        rel = centre - q.origin
        a = (rel @ q.e1 + s * (rays @ q.e1)) / (q.e1 @ q.e1)
        b = (rel @ q.e2 + s * (rays @ q.e2)) / (q.e2 @ q.e2)
        hit = (s > 1e-3) & (s < depth) & (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)
        depth = np.where(hit, s, depth)
        index = np.where(hit, k, index)
        coord_a = np.where(hit, a, coord_a)
        coord_b = np.where(hit, b, coord_b)
    return depth, index, coord_a, coord_b


def shade(quads: list[Quad], textures: list[np.ndarray], index: np.ndarray, a: np.ndarray, b: np.ndarray,
          light: np.ndarray, ambient: float, background: float) -> np.ndarray:
    """Grey image of a ray cast: each visible quad's texture (repeated, a mip level chosen from its footprint) times
    albedo × (ambient + diffuse lighting from direction ``light``)."""
    image = np.full(index.shape, background, np.float32)
    for k in np.unique(index):
        if k < 0:
            continue
        q = quads[k]
        tex = textures[q.texture]
        per_m = tex.shape[1] / q.period  # texels per metre
        sel = index == k
        mx = (a * np.linalg.norm(q.e1) * per_m).astype(np.float32)
        my = (b * np.linalg.norm(q.e2) * per_m).astype(np.float32)
        # texels per output pixel: pick the mip level whose texels are about a pixel wide (limits aliasing)
        gx = np.abs(np.diff(mx, axis=1))[sel[:, 1:] & sel[:, :-1]]
        gy = np.abs(np.diff(my, axis=0))[sel[1:] & sel[:-1]]
        foot = float(np.median(np.concatenate([gx, gy]))) if gx.size + gy.size else 1.0
        level = int(np.clip(np.floor(np.log2(max(foot, 1.0))), 0, 6))
        mip = _mip(tex, level)
        f = mip.shape[1] / tex.shape[1]
        # wrap texture coordinates by mirroring (seamless tiling)
        tw, th = mip.shape[1], mip.shape[0]
        ux, uy = mx * f, my * f
        ux = np.abs(((ux + tw) % (2 * tw)) - tw)
        uy = np.abs(((uy + th) % (2 * th)) - th)
        sampled = cv2.remap(mip, np.minimum(ux, tw - 1.001).astype(np.float32),
                            np.minimum(uy, th - 1.001).astype(np.float32), cv2.INTER_LINEAR)
        lit = q.albedo * (ambient + (1 - ambient) * max(0.0, float(q.normal @ light)))
        image[sel] = sampled[sel] * lit
    return image


@dataclass(frozen=True)
class Scene:
    quads: list[Quad]
    cameras: tuple[Camera, Camera]
    lights: tuple[np.ndarray, np.ndarray]
    ambients: tuple[float, float]
    background: tuple[float, float]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _K(rng: np.random.Generator, size: tuple[int, int], fov: tuple[float, float]) -> np.ndarray:
    w, h = size
    f = (w / 2) / np.tan(np.deg2rad(rng.uniform(*fov)) / 2)
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]])


def _roll(rng: np.random.Generator) -> float:
    if rng.random() < 0.15:
        return float(np.deg2rad(rng.uniform(-90, 90)))
    return float(np.deg2rad(rng.normal(0, 8)))


def _lights(rng: np.random.Generator) -> tuple[tuple[np.ndarray, np.ndarray], tuple[float, float]]:
    l0 = _unit(rng.normal(size=3) + np.array([0, 0, 1.0]))
    l1 = l0 if rng.random() < 0.5 else _unit(l0 + rng.normal(0, 0.6, 3))
    a0 = rng.uniform(0.35, 0.8)
    a1 = float(np.clip(a0 + rng.normal(0, 0.1), 0.25, 0.9))
    return (l0, l1), (a0, a1)


class SceneBuilder:
    """Random layouts of each kind; ``n_tex`` textures per scene, some of them low-texture."""

    def __init__(self, rng: np.random.Generator, size: tuple[int, int], n_tex: int) -> None:
        self.rng, self.size, self.n_tex = rng, size, n_tex

    def tex(self) -> int:
        return int(self.rng.integers(self.n_tex))

    def albedo(self) -> float:
        return float(self.rng.uniform(0.6, 1.25))

    def boxes(self, centre: np.ndarray, size: np.ndarray, yaw: float, period: float) -> list[Quad]:
        r = self.rng
        return box(centre, size, yaw, [self.tex() for _ in range(3)],
                   [period * r.uniform(0.5, 1.5) for _ in range(3)], [self.albedo() for _ in range(6)])

    def indoor(self) -> Scene:
        r = self.rng
        W, D, H = r.uniform(3.5, 8), r.uniform(3.5, 8), r.uniform(2.4, 3.2)
        quads = box(np.array([0, 0, H / 2]), np.array([W, D, H]), 0.0,
                    [self.tex() for _ in range(3)], [r.uniform(0.8, 3.0) for _ in range(3)],
                    [self.albedo() for _ in range(6)], bottom=True)
        for _ in range(int(r.integers(2, 7))):  # furniture
            s = np.array([r.uniform(0.3, 1.8), r.uniform(0.3, 1.8), r.uniform(0.3, 1.6)])
            c = np.array([r.uniform(-W / 2 + s[0] / 2, W / 2 - s[0] / 2), r.uniform(-D / 2 + s[1] / 2, D / 2 - s[1] / 2),
                          s[2] / 2 + (r.uniform(0, 0.8) if r.random() < 0.2 else 0.0)])
            quads += self.boxes(c, s, r.uniform(0, np.pi), r.uniform(0.3, 1.2))
        target = np.array([r.uniform(-W / 3, W / 3), r.uniform(-D / 3, D / 3), r.uniform(0.3, 1.6)])
        eye0 = np.array([r.uniform(-W / 2.5, W / 2.5), r.uniform(-D / 2.5, D / 2.5), r.uniform(1.1, 2.0)])
        eye1 = eye0 + _unit(r.normal(size=3) * np.array([1, 1, 0.3])) * r.uniform(0.2, 1.8)
        eye1 = np.clip(eye1, [-W / 2 + 0.2, -D / 2 + 0.2, 0.4], [W / 2 - 0.2, D / 2 - 0.2, H - 0.2])
        target1 = target + r.normal(0, 0.3, 3)
        return self._scene(quads, (eye0, target), (eye1, target1), (55, 90), (55, 90))

    def outdoor(self) -> Scene:
        r = self.rng
        quads = [Quad(np.array([-150.0, -150.0, 0.0]), np.array([300.0, 0, 0]), np.array([0, 300.0, 0]),
                      self.tex(), r.uniform(2, 10), self.albedo())]
        for _ in range(int(r.integers(3, 9))):  # buildings
            s = np.array([r.uniform(4, 25), r.uniform(4, 25), r.uniform(4, 30)])
            ang, dist = r.uniform(-0.9, 0.9), r.uniform(12, 70)
            c = np.array([dist * np.cos(ang), dist * np.sin(ang), s[2] / 2])
            quads += self.boxes(c, s, r.uniform(0, np.pi), r.uniform(3, 12))
        far = r.uniform(120, 200)  # a distant backdrop (hills, skyline)
        quads.append(Quad(np.array([far, -far, 0.0]), np.array([0, 2 * far, 0]), np.array([0, 0, far / 3]),
                          self.tex(), r.uniform(30, 80), self.albedo()))
        target = np.array([r.uniform(20, 50), r.uniform(-15, 15), r.uniform(2, 12)])
        eye0 = np.array([r.uniform(-10, 5), r.uniform(-10, 10), r.uniform(1.5, 4)])
        eye1 = eye0 + np.array([r.uniform(-6, 15), r.uniform(-12, 12), r.uniform(-1, 4)])
        eye1[2] = max(eye1[2], 1.0)
        return self._scene(quads, (eye0, target), (eye1, target + r.normal(0, 2, 3)), (35, 75), (20, 75))

    def object(self) -> Scene:
        r = self.rng
        quads = [Quad(np.array([-3.0, -3.0, 0.0]), np.array([6.0, 0, 0]), np.array([0, 6.0, 0]), self.tex(),
                      r.uniform(0.5, 2.0), self.albedo())]
        for _ in range(int(r.integers(3, 9))):
            s = np.array([r.uniform(0.1, 0.6), r.uniform(0.1, 0.6), r.uniform(0.1, 0.8)])
            c = np.array([r.uniform(-0.6, 0.6), r.uniform(-0.6, 0.6), s[2] / 2 + (r.uniform(0, 0.3) if r.random() < 0.3 else 0)])
            quads += self.boxes(c, s, r.uniform(0, np.pi), r.uniform(0.1, 0.5))
        if r.random() < 0.7:  # a wall behind
            quads.append(Quad(np.array([-3.0, 2.0, 0.0]), np.array([6.0, 0, 0]), np.array([0, 0, 3.0]), self.tex(),
                              r.uniform(0.5, 2.0), self.albedo()))
        target = np.array([r.uniform(-0.2, 0.2), r.uniform(-0.2, 0.2), r.uniform(0.1, 0.4)])
        az0, el0 = r.uniform(0, 2 * np.pi), np.deg2rad(r.uniform(15, 60))
        daz = np.deg2rad(r.uniform(5, 60)) * r.choice([-1, 1])
        el1 = np.clip(el0 + np.deg2rad(r.normal(0, 12)), np.deg2rad(8), np.deg2rad(75))
        d0 = r.uniform(1.2, 3.0)
        d1 = d0 * np.exp(r.uniform(np.log(0.5), np.log(2.0)))
        eye = lambda az, el, d: target + d * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        return self._scene(quads, (eye(az0, el0, d0), target), (eye(az0 + daz, el1, d1), target + r.normal(0, 0.05, 3)),
                           (35, 70), (35, 70))

    def plane(self) -> Scene:
        r = self.rng
        side = 4.0
        quads = [Quad(np.array([-side / 2, -side / 2, 0.0]), np.array([side, 0, 0]), np.array([0, side, 0]),
                      self.tex(), side * r.uniform(0.5, 1.0), 1.0)]
        target = np.array([r.uniform(-0.5, 0.5), r.uniform(-0.5, 0.5), 0.0])

        def eye(tilt: float, dist: float) -> np.ndarray:
            az = r.uniform(0, 2 * np.pi)
            return target + dist * np.array([np.sin(tilt) * np.cos(az), np.sin(tilt) * np.sin(az), np.cos(tilt)])

        d0 = r.uniform(2.0, 4.0)
        scale = np.exp(r.uniform(np.log(0.25), np.log(4.0))) if r.random() < 0.5 else np.exp(r.uniform(-0.4, 0.4))
        eye0, eye1 = eye(np.deg2rad(r.uniform(0, 30)), d0), eye(np.deg2rad(r.uniform(20, 72)), d0 * scale)
        return self._scene(quads, (eye0, target), (eye1, target + r.normal(0, 0.2, 3) * [1, 1, 0]), (40, 70),
                           (40, 70), up_free=True)

    def _scene(self, quads: list[Quad], view0: tuple[np.ndarray, np.ndarray], view1: tuple[np.ndarray, np.ndarray],
               fov0: tuple[float, float], fov1: tuple[float, float], up_free: bool = False) -> Scene:
        r = self.rng
        cams = []
        for (eye, target), fov in ((view0, fov0), (view1, fov1)):
            roll = float(r.uniform(-np.pi, np.pi)) if up_free and r.random() < 0.3 else _roll(r)
            R, t = look_at(eye, target, roll)
            cams.append(Camera(_K(r, self.size, fov), R, t))
        lights, ambients = _lights(r)
        bg = float(r.uniform(0.3, 0.9))
        return Scene(quads, (cams[0], cams[1]), lights, ambients, (bg, float(np.clip(bg + r.normal(0, 0.1), 0, 1))))


def _texture(rng: np.random.Generator, photo: np.ndarray) -> np.ndarray:
    """A random crop of a photo, 96–384 px; one in five flattened to low texture (blurred, contrast cut)."""
    h, w = photo.shape
    side = int(min(h, w) * rng.uniform(0.25, 0.9))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    out = int(rng.uniform(96, 384))
    tex = cv2.resize(photo[y:y + side, x:x + side], (out, out), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.2:
        k = int(rng.choice([7, 15, 31]))
        tex = cv2.GaussianBlur(tex, (k, k), 0)
        tex = tex.mean() + (tex - tex.mean()) * rng.uniform(0.1, 0.5)
    return np.clip(tex, 0, 1).astype(np.float32)


def render_pair(scene: Scene, textures: list[np.ndarray], size: tuple[int, int], supersample: int = 1
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(two grey images, two depth maps (0 where nothing is seen)) of a scene. Textures are sampled from the mip level
    that fits their footprint; ``supersample`` > 1 antialiases edges too (at that factor² the cost), depths stay
    exact at pixel centres."""
    images, depths = [], []
    for cam, light, ambient, bg in zip(scene.cameras, scene.lights, scene.ambients, scene.background):
        depth, index, a, b = cast(scene.quads, cam, size, supersample)
        img = shade(scene.quads, textures, index, a, b, light, ambient, bg)
        if supersample > 1:
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            depth, _, _, _ = cast(scene.quads, cam, size, 1)
        img = img / max(1.0, float(np.percentile(img, 99)))  # no blown-out views
        images.append(img)
        depths.append(np.where(np.isfinite(depth), depth, 0.0).astype(np.float32))
    return images, depths


def covisible_share(depth0: np.ndarray, depth1: np.ndarray, cam0: Camera, cam1: Camera, stride: int = 8) -> float:
    """Share of the coarse cells of view 0 whose centre is seen (not occluded) in view 1."""
    ys, xs = np.mgrid[0:depth0.shape[0]:stride, 0:depth0.shape[1]:stride]
    z = depth0[ys, xs].astype(np.float64)
    pts = np.stack([xs * z, ys * z, z], -1).reshape(-1, 3) @ np.linalg.inv(cam0.K).T
    world = (pts - cam0.t) @ cam0.R
    cam = world @ cam1.R.T + cam1.t
    proj = cam @ cam1.K.T
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = proj[:, 0] / proj[:, 2], proj[:, 1] / proj[:, 2]
    h, w = depth1.shape
    ok = (z.reshape(-1) > 0) & (cam[:, 2] > 1e-3) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    ui, vi = np.clip(np.round(u[ok]), 0, w - 1).astype(int), np.clip(np.round(v[ok]), 0, h - 1).astype(int)
    d1 = depth1[vi, ui]
    seen = (d1 > 0) & (np.abs(d1 - cam[ok, 2]) < 0.05 * d1)
    return float(seen.sum()) / z.size


class ScenePairs(Dataset):
    """Endless synthetic 3D pairs (see the module docstring) textured from ``images``; item k is a pure function of
    (seed, k). ``size`` (W, H) of both views, multiples of 8; ``mix`` the share of each of :data:`KINDS`; pairs whose
    covisible share of coarse cells is below ``min_covisible`` are redrawn; with ``fine=False`` the pairs train the
    coarse matching only (rendered textures held the sub-pixel accuracy back)."""

    def __init__(self, images: list[Path], size: tuple[int, int] = (384, 288), length: int = 1000, seed: int = 0,
                 mix: tuple[float, ...] = DEFAULT_MIX, min_covisible: float = 0.12, photometric_aug: bool = True,
                 fine: bool = True) -> None:
        if not images:
            raise ValueError("no texture images")
        if len(mix) != len(KINDS) or min(mix) < 0 or sum(mix) <= 0:
            raise ValueError(f"mix must give {len(KINDS)} non-negative shares ({', '.join(KINDS)})")
        self.images, self.size, self.length, self.seed = list(images), (int(size[0]), int(size[1])), length, seed
        self.mix = np.asarray(mix, np.float64) / sum(mix)
        self.min_covisible, self.photometric_aug, self.fine = min_covisible, photometric_aug, fine
        self._photos = PhotoCache()

    def __len__(self) -> int:
        return self.length

    @staticmethod
    def collate(samples: list[DepthPairSample]) -> DepthPairSample:
        return collate_depth(samples)

    def _photo(self, k: int) -> np.ndarray:
        return self._photos(self.images[k])

    def scene(self, index: int, attempt: int = 0) -> tuple[Scene, list[np.ndarray], str]:
        """The scene of item ``index`` (its ``attempt``-th draw), its textures and its kind."""
        rng = np.random.default_rng([self.seed, int(index), attempt])
        kind = KINDS[int(rng.choice(len(KINDS), p=self.mix))]
        n_tex = int(rng.integers(3, 7))
        textures = [_texture(rng, self._photo(int(rng.integers(len(self.images))))) for _ in range(n_tex)]
        builder = SceneBuilder(rng, self.size, n_tex)
        return getattr(builder, kind)(), textures, kind

    def __getitem__(self, index: int) -> DepthPairSample:
        for attempt in range(12):
            scene, textures, _ = self.scene(index, attempt)
            images, depths = render_pair(scene, textures, self.size)
            if covisible_share(depths[0], depths[1], *scene.cameras) >= self.min_covisible:
                break
        rng = np.random.default_rng([self.seed, int(index), 99])
        if self.photometric_aug:
            images = [photometric(rng, img) for img in images]
        cam0, cam1 = scene.cameras
        T = cam1.w2c() @ np.linalg.inv(cam0.w2c())
        one = torch.ones(2, dtype=torch.float64)
        return DepthPairSample(torch.from_numpy(np.ascontiguousarray(images[0], np.float32))[None],
                               torch.from_numpy(np.ascontiguousarray(images[1], np.float32))[None],
                               torch.from_numpy(depths[0]), torch.from_numpy(depths[1]),
                               torch.from_numpy(cam0.K.copy()), torch.from_numpy(cam1.K.copy()), torch.from_numpy(T),
                               one, one.clone(), fine=self.fine)
