"""Real wide-baseline training pairs from posed scenes with SfM tracks (MegaDepth's role in the reference training).

A scene folder (``../shared/data/posed_train/NAME``) holds ``images/*.jpg``, ``cameras.json`` ({name: {K, R, t}},
``x_cam = R @ X + t``, pixel centres at integers), ``points.npz`` (the SfM tracks: observations ``xy`` (N, 2) in
``image`` (N,) of ``names``, of 3D ``point`` ids) and ``pairs.txt`` (``name0 name1 n_shared overlap``).

:class:`PosedPairs` draws a pair by its track overlap (weighted toward the 0.1-0.4 wide baselines), crops both photos
at random zooms (the second crop centred on where the first one's tracks land, so the pair keeps shared tracks),
changes the appearance of each view on its own (:func:`~loftr.train.appearance.appearance`) and swaps the views half
of the time. A sample carries the shared track observations (sparse, ~1 px correspondences) and the fundamental
matrix of the crops (the cameras' exact epipolar geometry), which
:func:`~loftr.train.supervision.posed_coarse_supervision` turns into positives, epipolar negatives and unknowns.

The scenes of ``data/posed`` (evaluation) have no ``points.npz`` and are refused here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..geometry import fundamental_from_pose
from .appearance import appearance, relight
from .teacher import TeacherCache, stack_matched

DEFAULT_HOLDOUT = ("cup-table",)  # the release gate evaluates on it
MIN_CROP_TRACKS = 16
LABELLED_WEIGHT = 3.0  # how much more often a pair with a teacher's verified matches is drawn
SCENE_FILES = ("cameras.json", "points.npz", "pairs.txt")


def overlap_weight(overlap: float) -> float:
    """Sampling weight of a pair by its track overlap: MegaDepth keeps 0.1-0.7; most weight on 0.1-0.4."""
    if 0.1 <= overlap <= 0.4:
        return 1.0
    if 0.4 < overlap <= 0.7:
        return 0.4
    return 0.1 if overlap > 0.7 else 0.25


def fundamental(K0: np.ndarray, T0: np.ndarray, K1: np.ndarray, T1: np.ndarray) -> np.ndarray:
    """(3, 3) F with p1^T F p0 = 0 for pixels of two cameras (K, world-to-camera 4x4)."""
    T = T1 @ np.linalg.inv(T0)  # camera 0 → camera 1
    return fundamental_from_pose(T[:3, :3], T[:3, 3], K0, K1)


@dataclass(frozen=True, eq=False)
class PosedScene:
    """One scene: cameras, track observations grouped by image, and its pairs with their overlap."""

    root: Path
    cameras: dict[str, tuple[np.ndarray, np.ndarray]]  # name → (K (3, 3), world-to-camera (4, 4))
    tracks: dict[str, tuple[np.ndarray, np.ndarray]]  # name → (point ids (k,) sorted, xy (k, 2) float64)
    pairs: list[tuple[str, str, float]]
    extra: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # (a, b) → a
    # teacher's verified matches (k, 2) in a and in b, original pixels (see :meth:`with_teacher`)

    @property
    def name(self) -> str:
        return self.root.name

    @classmethod
    def load(cls, root: str | Path) -> "PosedScene":
        root = Path(root)
        missing = [f for f in SCENE_FILES if not (root / f).is_file()]
        if missing:
            raise ValueError(f"{root} is not a posed training scene: no {', '.join(missing)} (the scenes of "
                             "data/posed are evaluation-only; use data/posed_train)")
        cams = {}
        for name, cam in json.loads((root / "cameras.json").read_text()).items():
            T = np.eye(4)
            T[:3, :3], T[:3, 3] = np.asarray(cam["R"], np.float64), np.asarray(cam["t"], np.float64)
            cams[name] = (np.asarray(cam["K"], np.float64).reshape(3, 3), T)
        with np.load(root / "points.npz", allow_pickle=False) as data:
            xy, image, point = data["xy"].astype(np.float64), data["image"], data["point"]
            names = [str(n) for n in data["names"]]
        tracks = {}
        for k, name in enumerate(names):
            sel = np.flatnonzero(image == k)
            order = np.argsort(point[sel], kind="stable")
            tracks[name] = (point[sel][order], xy[sel][order])
        pairs = []
        for line in (root / "pairs.txt").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[0] in cams and parts[1] in cams and parts[0] in tracks and parts[1] in tracks:
                pairs.append((parts[0], parts[1], float(parts[3])))
        if not pairs:
            raise ValueError(f"{root}/pairs.txt names no pair of posed images with tracks")
        return cls(root, cams, tracks, pairs)

    def shared(self, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
        """(k, 2) observations of the points both images see, in a and in b (original pixels), followed by the
        teacher's verified matches of the pair where there are some."""
        (ids0, xy0), (ids1, xy1) = self.tracks[a], self.tracks[b]
        _, k0, k1 = np.intersect1d(ids0, ids1, assume_unique=False, return_indices=True)
        if (a, b) in self.extra:
            t0, t1 = self.extra[(a, b)]
        elif (b, a) in self.extra:
            t1, t0 = self.extra[(b, a)]
        else:
            return xy0[k0], xy1[k1]
        return np.concatenate([xy0[k0], t0]), np.concatenate([xy1[k1], t1])

    def with_teacher(self, cache: TeacherCache, root: str | Path) -> "PosedScene":
        """This scene with the matches of ``cache`` (names relative to ``root``) whose two photos are both this
        scene's: a teacher's matches verified against the true cameras (``loftr teacher-cache --pairs
        pairs.txt --cameras cameras.json``) add positives where the SfM tracks are sparse — wide baselines."""
        images = (self.root / "images").resolve()
        extra = dict(self.extra)
        for (n0, n1), k0, k1 in zip(cache.names, cache.kpts0, cache.kpts1):
            p0, p1 = (Path(root) / n0).resolve(), (Path(root) / n1).resolve()
            if p0.parent == images and p1.parent == images and p0.name in self.cameras and p1.name in self.cameras:
                extra[(p0.name, p1.name)] = (np.asarray(k0, np.float64), np.asarray(k1, np.float64))
        return replace(self, extra=extra)


def scene_folders(root: str | Path, holdout: Iterable[str] = DEFAULT_HOLDOUT) -> list[Path]:
    """Scene folders of ``root`` (a folder of scenes, one scene, or comma-separated folders), less ``holdout``
    (scene names)."""
    skip = {h.strip() for h in holdout if h.strip()}
    folders: list[Path] = []
    for part in (p.strip() for p in str(root).split(",") if p.strip()):
        path = Path(part)
        if not path.is_dir():
            raise FileNotFoundError(f"posed training scenes {path} do not exist")
        if (path / "points.npz").is_file() or (path / "cameras.json").is_file():
            folders.append(path)
        else:
            folders += sorted(p for p in path.iterdir() if p.is_dir())
    kept = [f for f in folders if f.name not in skip]
    if not kept:
        raise ValueError(f"no posed training scenes in {root} (after holding out {', '.join(sorted(skip)) or 'none'})")
    return kept


@dataclass(frozen=True)
class PosedPairSample:
    """A real pair with SfM tracks and known epipolar geometry (or a batch: a leading N, tracks padded)."""

    image0: torch.Tensor  # (1, H, W) float in [0, 1]
    image1: torch.Tensor
    kpts0: torch.Tensor  # (K, 2) float64 network pixels (x, y) of the shared track observations
    kpts1: torch.Tensor
    valid: torch.Tensor  # (K,) bool (padding False)
    F_0to1: torch.Tensor  # (3, 3) float64, p1^T F p0 = 0 in network pixels
    fine: bool = True  # whether the tracks and epipolar lines also train the fine stage


def collate_posed(samples: list[PosedPairSample]) -> PosedPairSample:
    return PosedPairSample(*stack_matched(samples), torch.stack([s.F_0to1 for s in samples]),
                           all(s.fine for s in samples))


def _crop_affine(f: tuple[float, float], x0: int, y0: int) -> np.ndarray:
    """(3, 3) map of original pixels to crop pixels after resizing by ``f`` (pixel centres at integers)."""
    return np.array([[f[0], 0.0, 0.5 * f[0] - 0.5 - x0], [0.0, f[1], 0.5 * f[1] - 0.5 - y0], [0.0, 0.0, 1.0]])


def _apply(A: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ A[:2, :2].T + A[:2, 2]


class PosedPairs(Dataset):
    """Endless crops of posed scene pairs (see the module docstring); item k is a pure function of (seed, k).

    ``scenes`` scene folders (see :func:`scene_folders`); ``size`` (W, H) of both views (multiples of 8);
    ``max_zoom`` the largest extra zoom of a crop beyond covering the network size; ``strength`` of the
    appearance changes; ``hard_light`` the share of pairs in which one view is also strongly relit
    (:func:`~loftr.train.appearance.relight`, drawn apart from the rest)."""

    def __init__(self, scenes: Iterable[str | Path], size: tuple[int, int] = (384, 288), length: int = 1000,
                 seed: int = 0, max_zoom: float = 1.8, strength: float = 1.0, fine: bool = True, hard_light: float = 0.0,
                 teacher: str | Path | TeacherCache | None = None, teacher_root: str | Path = ".") -> None:
        self.scenes = [PosedScene.load(s) for s in scenes]
        if not self.scenes:
            raise ValueError("no posed training scenes")
        if teacher is not None and teacher != "":
            cache = teacher if isinstance(teacher, TeacherCache) else TeacherCache.load_all(teacher)
            self.scenes = [s.with_teacher(cache, teacher_root) for s in self.scenes]
            if not any(s.extra for s in self.scenes):
                raise ValueError(f"no pair of the teacher cache {teacher} is a pair of the posed training scenes "
                                 f"{', '.join(s.name for s in self.scenes)} (names relative to {teacher_root})")
        weights = [np.array([overlap_weight(o) * (LABELLED_WEIGHT if (a, b) in s.extra or (b, a) in s.extra else 1)
                             for a, b, o in s.pairs]) for s in self.scenes]
        self.pair_p = [w / w.sum() for w in weights]
        scene_w = np.sqrt([len(s.pairs) for s in self.scenes])  # big scenes more often, not proportionally
        self.scene_p = scene_w / scene_w.sum()
        self.size, self.length, self.seed = (int(size[0]), int(size[1])), length, seed
        self.max_zoom, self.strength, self.fine, self.hard_light = max_zoom, strength, fine, hard_light

    def __len__(self) -> int:
        return self.length

    @staticmethod
    def collate(samples: list[PosedPairSample]) -> PosedPairSample:
        return collate_posed(samples)

    def _crop(self, rng: np.random.Generator, photo: np.ndarray, points: np.ndarray,
              centre: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A (H, W, 3) crop at a random zoom around ``centre`` (original pixels, jittered) or a random track, the
        (3, 3) map of original to crop pixels and ``points`` in crop pixels."""
        W, H = self.size
        h, w = photo.shape[:2]
        zoom = max(W / w, H / h) * float(rng.uniform(1.0, self.max_zoom))
        rw, rh = max(W, int(round(w * zoom))), max(H, int(round(h * zoom)))
        f = (rw / w, rh / h)
        jitter = 0.25 if centre is None else 0.125
        if centre is None:
            centre = points[int(rng.integers(len(points)))]
        c = _apply(_crop_affine(f, 0, 0), centre) + rng.uniform(-jitter, jitter, 2) * (W, H)
        x0 = int(np.clip(round(c[0] - W / 2), 0, rw - W))
        y0 = int(np.clip(round(c[1] - H / 2), 0, rh - H))
        img = cv2.resize(photo, (rw, rh), interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR)
        A = _crop_affine(f, x0, y0)
        return img[y0:y0 + H, x0:x0 + W], A, _apply(A, points)

    def _inside(self, p: np.ndarray) -> np.ndarray:
        W, H = self.size
        return (p[:, 0] > -0.5) & (p[:, 1] > -0.5) & (p[:, 0] < W - 0.5) & (p[:, 1] < H - 0.5)

    def __getitem__(self, index: int) -> PosedPairSample:
        rng = np.random.default_rng([self.seed, int(index)])
        s = int(rng.choice(len(self.scenes), p=self.scene_p))
        scene = self.scenes[s]
        a, b, _ = scene.pairs[int(rng.choice(len(scene.pairs), p=self.pair_p[s]))]
        if rng.random() < 0.5:
            a, b = b, a
        xy0, xy1 = scene.shared(a, b)
        photos = [cv2.imread(str(scene.root / "images" / n), cv2.IMREAD_COLOR) for n in (a, b)]
        for n, p in zip((a, b), photos):
            if p is None:
                raise FileNotFoundError(f"cannot read image {scene.root / 'images' / n}")
        best = None
        for _ in range(6):
            img0, A0, p0 = self._crop(rng, photos[0], xy0, None)
            in0 = self._inside(p0)
            centre = np.median(xy1[in0], 0) if in0.any() else None
            img1, A1, p1 = self._crop(rng, photos[1], xy1, centre)
            keep = in0 & self._inside(p1)
            if best is None or keep.sum() > best[-1].sum():
                best = (img0, img1, A0, A1, p0, p1, keep)
            if keep.sum() >= MIN_CROP_TRACKS:
                break
        img0, img1, A0, A1, p0, p1, keep = best
        (K0, T0), (K1, T1) = scene.cameras[a], scene.cameras[b]
        F = np.linalg.inv(A1).T @ fundamental(K0, T0, K1, T1) @ np.linalg.inv(A0)
        F = F / np.linalg.norm(F)
        views = [appearance(rng, img0, self.strength), appearance(rng, img1, self.strength)]
        light = np.random.default_rng([self.seed, int(index), 2])
        if self.hard_light > 0 and light.random() < self.hard_light:
            side = int(light.integers(2))
            views[side] = relight(light, views[side])
        return PosedPairSample(torch.from_numpy(views[0])[None], torch.from_numpy(views[1])[None],
                               torch.from_numpy(p0[keep]), torch.from_numpy(p1[keep]),
                               torch.ones(int(keep.sum()), dtype=torch.bool), torch.from_numpy(F), self.fine)
