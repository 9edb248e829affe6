"""Rectified stereo with ground-truth disparity (Middlebury layout, PFM disparities; scikit-image ships the
Motorcycle pair).

A left-image point (x, y) with disparity d lies at (x - d, y) in the right image. Disparity maps use the
pixel-centre convention: ``disp[r, c]`` is the disparity of the pixel centred at (c, r).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LoFTRError


@dataclass(frozen=True)
class StereoPair:
    left: Path
    right: Path
    disparity: np.ndarray  # (H, W) float, inf/nan/<=0 where unknown
    name: str


def motorcycle() -> StereoPair:
    """The Middlebury 2014 Motorcycle pair bundled with scikit-image (no download)."""
    import skimage

    root = Path(skimage.__file__).parent / "data"
    disp = np.load(root / "motorcycle_disp.npz")["arr_0"].astype(np.float64)
    return StereoPair(root / "motorcycle_left.png", root / "motorcycle_right.png", disp, "motorcycle")


def stereo_errors(kpts0: np.ndarray, kpts1: np.ndarray, disparity: np.ndarray) -> np.ndarray:
    """(M,) distance in pixels between each right keypoint and the true position of its left keypoint; NaN where
    the disparity is unknown or the left keypoint is outside the map."""
    kpts0, kpts1 = np.asarray(kpts0, np.float64), np.asarray(kpts1, np.float64)
    h, w = disparity.shape
    col, row = np.round(kpts0[:, 0]).astype(int), np.round(kpts0[:, 1]).astype(int)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    d = np.full(len(kpts0), np.nan)
    d[inside] = disparity[row[inside], col[inside]]
    d[~np.isfinite(d) | (d <= 0)] = np.nan
    truth = np.stack([kpts0[:, 0] - d, kpts0[:, 1]], -1)
    return np.linalg.norm(kpts1 - truth, axis=-1)


def precision(errors: np.ndarray, thresholds: tuple[float, ...] = (1.0, 3.0)) -> dict[str, float]:
    """Fraction of matches with known ground truth whose error is below each threshold, and that count."""
    known = errors[np.isfinite(errors)]
    out = {f"precision@{t:g}px": float((known < t).mean()) if len(known) else 0.0 for t in thresholds}
    out["with_ground_truth"] = int(len(known))
    return out


def read_pfm(path: str | Path) -> np.ndarray:
    """A PFM file (``Pf`` grey or ``PF`` colour; negative scale = little-endian; rows stored bottom to top) →
    (H, W) or (H, W, 3) float32, top row first."""
    path = Path(path)
    if not path.is_file():
        raise LoFTRError(f"PFM file {path} does not exist")
    buf = path.read_bytes()
    tokens, pos = [], 0
    while len(tokens) < 4:  # type, width, height, scale, separated by whitespace
        while pos < len(buf) and buf[pos : pos + 1].isspace():
            pos += 1
        start = pos
        while pos < len(buf) and not buf[pos : pos + 1].isspace():
            pos += 1
        if start == pos:
            raise LoFTRError(f"{path} is not a PFM file (truncated header)")
        tokens.append(buf[start:pos].decode("ascii", errors="replace"))
    pos += 1  # the single whitespace character that ends the header
    kind, width, height, scale = tokens
    if kind not in ("Pf", "PF"):
        raise LoFTRError(f"{path} is not a PFM file (header {kind!r}, expected 'Pf' or 'PF')")
    try:
        w, h, s = int(width), int(height), float(scale)
    except ValueError:
        raise LoFTRError(f"{path} has a malformed PFM header: {' '.join(tokens)}") from None
    channels = 3 if kind == "PF" else 1
    count = w * h * channels
    if len(buf) - pos < 4 * count:
        raise LoFTRError(f"{path} is truncated: {w}x{h}x{channels} floats expected")
    data = np.frombuffer(buf, dtype="<f4" if s < 0 else ">f4", count=count, offset=pos)
    image = data.reshape(h, w, channels)[::-1].astype(np.float32)
    return image[..., 0] if channels == 1 else image


def middlebury(folder: str | Path) -> StereoPair:
    """A Middlebury scene folder: ``im0.png`` (left), ``im1.png`` (right) and ``disp0.pfm`` (or ``disp0GT.pfm``:
    left disparity in pixels of these images, inf where unknown)."""
    folder = Path(folder)
    left, right = folder / "im0.png", folder / "im1.png"
    disp = next((folder / n for n in ("disp0.pfm", "disp0GT.pfm") if (folder / n).is_file()), None)
    missing = [p.name for p in (left, right) if not p.is_file()] + (["disp0.pfm"] if disp is None else [])
    if missing:
        raise LoFTRError(f"Middlebury folder {folder} lacks {', '.join(missing)}")
    return StereoPair(left, right, read_pfm(disp).astype(np.float64), folder.name)


def middlebury_scenes(root: str | Path) -> list[StereoPair]:
    """``root`` itself when it is a Middlebury scene folder, else each sub-folder holding ``im0.png`` (sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise LoFTRError(f"Middlebury folder {root} does not exist")
    if (root / "im0.png").is_file():
        return [middlebury(root)]
    scenes = [middlebury(d) for d in sorted(root.iterdir()) if (d / "im0.png").is_file()]
    if not scenes:
        raise LoFTRError(f"no Middlebury scene (im0.png, im1.png, disp0.pfm) in {root}")
    return scenes
