"""Homographic training pairs from a folder of photos: random crop, random homography, photometric changes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .appearance import relight
from .warps import ExtremeWarp, render_view, sample_extreme

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(root: str | Path) -> list[Path]:
    """Image files under ``root`` (recursive), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"training image folder {root} does not exist")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def random_homography(rng: np.random.Generator, size: int, max_angle: float = 30.0, scale: tuple[float, float] = (0.75, 1.33),
                      perspective: float = 0.15, shift: float = 0.12) -> np.ndarray:
    """A 3x3 homography of a ``size``×``size`` crop onto itself: rotation, scale, shear-free perspective, shift,
    all about the crop centre. Maps image0 pixels to image1 pixels."""
    c = (size - 1) / 2.0
    to_centre = np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1]], dtype=np.float64)
    back = np.array([[1, 0, c], [0, 1, c], [0, 0, 1]], dtype=np.float64)
    a = np.deg2rad(rng.uniform(-max_angle, max_angle))
    s = np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1])))
    rot = np.array([[s * np.cos(a), -s * np.sin(a), 0], [s * np.sin(a), s * np.cos(a), 0], [0, 0, 1]])
    persp = np.eye(3)
    persp[2, :2] = rng.uniform(-perspective, perspective, 2) / size
    move = np.eye(3)
    move[:2, 2] = rng.uniform(-shift, shift, 2) * size
    return back @ move @ persp @ rot @ to_centre


def photometric(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Random brightness, contrast, gamma, blur and noise on a float image in [0, 1]."""
    img = img * rng.uniform(0.7, 1.3) + rng.uniform(-0.15, 0.15)
    img = (img - img.mean()) * rng.uniform(0.7, 1.3) + img.mean()
    img = np.clip(img, 0, 1) ** np.exp(rng.uniform(-0.4, 0.4))
    if rng.random() < 0.3:
        k = int(rng.choice([3, 5]))
        img = cv2.GaussianBlur(img, (k, k), 0)
    img = img + rng.normal(0, rng.uniform(0, 0.03), img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def read_photo(path: Path, longest: int = 1024) -> np.ndarray:
    """A training photo as grey float32 in [0, 1], shrunk to at most ``longest`` pixels (keeps the caches of the
    datasets small; crops are taken at several scales)."""
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"cannot read training image {path}")
    if max(img.shape) > longest:
        f = longest / max(img.shape)
        img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    return img.astype(np.float32) / 255.0


class PhotoCache:
    """Training photos read once (:func:`read_photo`, grey float32, at most ``longest`` px) and kept by path: each
    dataset (and each data-loading worker) holds one."""

    def __init__(self, longest: int = 1024) -> None:
        self.longest = longest
        self._photos: dict[Path, np.ndarray] = {}

    def __call__(self, path: Path) -> np.ndarray:
        if path not in self._photos:
            self._photos[path] = read_photo(path, self.longest)
        return self._photos[path]


@dataclass(frozen=True)
class PairSample:
    image0: torch.Tensor  # (1, S, S) float in [0, 1]
    image1: torch.Tensor  # (1, S, S)
    H_0to1: torch.Tensor  # (3, 3) float64, image0 pixels → image1 pixels
    valid1: torch.Tensor  # (S, S) bool, pixels of image1 that show the source crop (extreme views: the photo)


class HomographyPairs(Dataset):
    """``length`` random pairs per epoch from ``images``; item k is reproducible from (seed, epoch, k).

    The pairs never run out: index ``e * length + k`` is item k of epoch ``epoch + e`` (what the step-based sampler
    of the trainer asks for). A share ``extreme_share`` of the pairs are extreme views (:mod:`loftr.train.warps`,
    drawn as ``extreme`` says): image1 is rendered from the whole photo, so a close-up shows the photo's own detail
    and the view may extend past the crop; which pairs are extreme is drawn apart, so the other pairs stay as they
    are without extreme views."""

    def __init__(self, images: list[Path], size: int = 256, length: int = 1000, seed: int = 0,
                 extreme_share: float = 0.0, extreme: ExtremeWarp = ExtremeWarp(), hard_light: float = 0.0,
                 extreme_light: bool = True) -> None:
        if not images:
            raise ValueError("no training images")
        if not 0.0 <= extreme_share <= 1.0:
            raise ValueError(f"extreme_share must be in [0, 1], got {extreme_share}")
        self.images, self.size, self.length, self.seed = list(images), size, length, seed
        self.extreme_share, self.extreme, self.hard_light = extreme_share, extreme, hard_light
        self.extreme_light = extreme_light
        self.epoch = 0
        self._photos = PhotoCache()

    def __len__(self) -> int:
        return self.length

    @staticmethod
    def collate(samples: list[PairSample]) -> PairSample:
        """Batch of pairs (every training dataset names its collate function)."""
        return collate(samples)

    def _grey(self, k: int) -> np.ndarray:
        return self._photos(self.images[k])

    def __getitem__(self, index: int) -> PairSample:
        epochs, index = divmod(int(index), self.length)
        rng = np.random.default_rng([self.seed, self.epoch + epochs, index])
        s = self.size
        img = self._grey(int(rng.integers(len(self.images))))
        h, w = img.shape
        side = int(min(h, w) * rng.uniform(0.5, 1.0))
        side = max(min(side, h, w), 1)
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = cv2.resize(img[y:y + side, x:x + side], (s, s), interpolation=cv2.INTER_AREA)
        pick = np.random.default_rng([self.seed, self.epoch + epochs, index, 1])
        extreme = self.extreme_share > 0 and pick.random() < self.extreme_share
        if extreme:
            H = sample_extreme(rng, s, self.extreme)
            k = s / side  # photo pixels → crop pixels (cv2.resize keeps pixel centres)
            photo_to_0 = np.array([[k, 0, (0.5 - x) * k - 0.5], [0, k, (0.5 - y) * k - 0.5], [0, 0, 1]])
            warped, valid = render_view(img, H @ photo_to_0, s)
        else:
            H = random_homography(rng, s)
            warped = cv2.warpPerspective(crop, H, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            valid = cv2.warpPerspective(np.ones_like(crop), H, (s, s), flags=cv2.INTER_NEAREST) > 0.5
        img0, img1 = photometric(rng, crop), photometric(rng, warped)
        relit = self.hard_light > 0 and pick.random() < self.hard_light  # one view relit, drawn apart from the rest
        if relit and (self.extreme_light or not extreme):
            light = np.random.default_rng([self.seed, self.epoch + epochs, index, 2])
            if light.random() < 0.5:
                img0 = relight(light, img0)
            else:
                img1 = relight(light, img1)
        img1 = np.where(valid, img1, 0.0).astype(np.float32)
        return PairSample(torch.from_numpy(img0)[None], torch.from_numpy(img1)[None], torch.from_numpy(H),
                          torch.from_numpy(valid))


def collate(samples: list[PairSample]) -> PairSample:
    return PairSample(*(torch.stack([getattr(s, f) for s in samples]) for f in ("image0", "image1", "H_0to1", "valid1")))


def to_device(batch: Any, device: torch.device) -> Any:
    """A batch dataclass with every tensor on ``device``."""
    moved = {f.name: getattr(batch, f.name).to(device, non_blocking=True) for f in dataclasses.fields(batch)
             if isinstance(getattr(batch, f.name), torch.Tensor)}
    return dataclasses.replace(batch, **moved)
