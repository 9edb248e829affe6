"""Synthetic homographies of real photos, generated in memory with a fixed seed (nothing is written).

Each photo, grey with its longest side scaled to ``size``, is image0; image1 is image0 warped by a random
homography of moderate strength (rotation, scale, perspective jitter of the corners, shift) followed by photometric
changes (gain, bias, gamma, blur, noise). The photos are shuffled with the seed and pair ``i`` draws from a
generator seeded with (seed, i), so ``limit`` takes a prefix of the same sequence of pairs.

Metrics (original pixels of the generated images): H from the matches (RANSAC, 3 px), mean corner error of
image0's corners and its AUC at 3/5/10 px; fraction of matches within 1/3/5 px of the truth (0 without matches).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import LoFTRError
from .baselines import PairMatcher, load_grey_uint8
from .homography import HomographyPair, HomographyProtocol
from .homography import run as run_homography
from .report import BenchmarkResult, Loaded

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp"}
PROTOCOL = HomographyProtocol(ransac_threshold=3.0, method="ransac", eval_short_side=None,
                              precision_thresholds=(1.0, 3.0, 5.0))


@dataclass(frozen=True)
class SyntheticConfig:
    """How pairs are generated: photo size (longest side), rotation (degrees), scale range, corner jitter and
    shift (fractions of the shorter side), and whether image1 gets photometric changes."""

    size: int = 640
    max_angle: float = 25.0
    scale: tuple[float, float] = (0.8, 1.25)
    corner_jitter: float = 0.08
    max_shift: float = 0.05
    photometric: bool = True


def random_homography(rng: np.random.Generator, width: int, height: int, cfg: SyntheticConfig) -> np.ndarray:
    """A (3, 3) homography image0 → image1 that maps the image corners to rotated, scaled, jittered and
    shifted corners (about the image centre)."""
    src = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float64)
    centre = src.mean(axis=0)
    a = np.deg2rad(rng.uniform(-cfg.max_angle, cfg.max_angle))
    s = np.exp(rng.uniform(np.log(cfg.scale[0]), np.log(cfg.scale[1])))
    R = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    short = min(width, height)
    dst = (src - centre) @ R.T + centre
    dst += rng.uniform(-cfg.corner_jitter, cfg.corner_jitter, (4, 2)) * short
    dst += rng.uniform(-cfg.max_shift, cfg.max_shift, 2) * short
    return cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32)).astype(np.float64)


def photometric_change(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Random gain, bias, gamma, (sometimes) blur and noise on a (H, W) uint8 image → uint8."""
    x = image.astype(np.float64) / 255.0
    x = np.clip(x * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1), 0.0, 1.0) ** np.exp(rng.uniform(-0.3, 0.3))
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.2))
    x = x + rng.normal(0.0, rng.uniform(0.0, 0.02), x.shape)
    return (np.clip(x, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def make_pair(image: np.ndarray, rng: np.random.Generator, cfg: SyntheticConfig = SyntheticConfig(),
              ) -> tuple[np.ndarray, np.ndarray]:
    """image1 (H, W) uint8 and H_0to1 (3, 3) for a grey (H, W) uint8 image0 (pixels outside image0 are 0)."""
    h, w = image.shape
    H = random_homography(rng, w, h, cfg)
    warped = cv2.warpPerspective(image, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return (photometric_change(rng, warped) if cfg.photometric else warped), H


def list_photos(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LoFTRError(f"photo folder {folder} does not exist")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not photos:
        raise LoFTRError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return photos


def read_synthetic(folder: str | Path | Sequence[str | Path], *, seed: int = 0, limit: int | None = None,
                   cfg: SyntheticConfig = SyntheticConfig()) -> Loaded[HomographyPair]:
    """In-memory pairs from the photos of ``folder`` (or a list of photo files): shuffled with ``seed``, the first
    ``limit`` of them."""
    photos = list_photos(folder) if isinstance(folder, (str, Path)) else [Path(p) for p in folder]
    if not photos:
        raise LoFTRError("no photos given")
    order = np.random.default_rng(seed).permutation(len(photos))
    if limit is not None:
        if limit < 1:
            raise LoFTRError(f"--limit must be at least 1, got {limit}")
        order = order[:limit]
    pairs = []
    for i, k in enumerate(order):
        image0, _ = load_grey_uint8(photos[k], max_size=cfg.size)
        image1, H = make_pair(image0, np.random.default_rng([seed, i]), cfg)
        size = (image0.shape[1], image0.shape[0])
        pairs.append(HomographyPair(photos[k].name, "synthetic", image0, image1, H, size, size))
    return Loaded(tuple(pairs))


def run(loaded: Loaded[HomographyPair], matchers: Sequence[PairMatcher], *, progress: bool = True,
        config: dict[str, Any] | None = None, cfg: SyntheticConfig | None = None) -> BenchmarkResult:
    """Every matcher on every synthetic pair (homography scoring with match precision); ``cfg``, the generator
    settings the pairs were made with, is recorded in the config."""
    title = (f"Synthetic homographies of {len(loaded.pairs)} photos (corner error and match precision in pixels "
             f"of the generated images; {PROTOCOL.method} {PROTOCOL.ransac_threshold:g} px)")
    generator = {} if cfg is None else {"generator": asdict(cfg)}
    return run_homography(loaded, matchers, PROTOCOL, progress=progress, benchmark="synthetic", title=title,
                          config={**generator, **(config or {})})


__all__ = ["SyntheticConfig", "PROTOCOL", "random_homography", "photometric_change", "make_pair", "list_photos",
           "read_synthetic", "run"]
