"""Images in: decoding (EXIF orientation), grey conversion, resizing, padding to the coarse stride with masks.

Coordinates are (x, y) pixels with pixel centres at integers (OpenCV's convention): pixel (0, 0) covers
[-0.5, 0.5]². The network's coarse cell (c, r) is centred on input pixel (8c, 8r) (every strided convolution is
centred), so its keypoints are in that convention too, and a point of a resized image maps back to the original
exactly with ``original = (resized + 0.5) / scale - 0.5`` (:func:`to_original`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ImageError

ImageLike = Union[str, Path, np.ndarray, torch.Tensor]


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file, applying its EXIF orientation → (H, W) or (H, W, 3) uint8."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ImageError(f"image file {path} does not exist")
    if not path.is_file():
        raise ImageError(f"{path} is not a file")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode not in ("L", "RGB"):
                img = img.convert("RGB") if img.mode in ("RGBA", "P", "CMYK", "YCbCr", "LA") else img.convert("L")
            arr = np.asarray(img)
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read image {path}: {exc}") from None
    if arr.dtype != np.uint8:  # 16-bit greys and the like
        arr = np.clip(arr.astype(np.float64) / max(float(arr.max()), 1.0) * 255, 0, 255).astype(np.uint8)
    return arr


def to_grey(image: ImageLike) -> torch.Tensor:
    """Any accepted image → (H, W) float32 tensor in [0, 1].

    Accepts a path, a numpy array (H, W), (H, W, 1|3|4) uint8 or float in [0, 1], or a tensor (H, W), (C, H, W),
    (1, C, H, W) float in [0, 1] / uint8. Colour becomes grey with the ITU-R 601 weights (as OpenCV does).
    """
    if isinstance(image, (str, Path)):
        image = read_image(image)
    if isinstance(image, np.ndarray):
        arr = image if image.flags.writeable else image.copy()
        if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
            arr = arr[..., :3]
            t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
        elif arr.ndim == 2:
            t = torch.from_numpy(np.ascontiguousarray(arr))[None]
        else:
            raise ImageError(f"an image array must be (H, W) or (H, W, 1|3|4), got shape {arr.shape}")
    elif isinstance(image, torch.Tensor):
        t = image.detach()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            raise ImageError(f"an image tensor must be (H, W), (C, H, W) or (1, C, H, W), got {tuple(image.shape)}")
        t = t[:3]
    else:
        raise ImageError(f"unsupported image type {type(image).__name__}: give a path, a numpy array or a tensor")
    t = t.cpu()
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    else:
        t = t.float()
        if t.numel() and (torch.isnan(t).any() or t.min() < -1e-3 or t.max() > 1 + 1e-3):
            raise ImageError("float images must hold values in [0, 1] without NaN")
    if t.shape[0] == 3:
        t = 0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2]
    else:
        t = t[0]
    return t.clamp(0, 1)


@dataclass(frozen=True)
class PreparedImage:
    """A network-ready image: ``image`` (N, 1, Hp, Wp), ``mask`` (N, Hp, Wp) bool or None when nothing is padded,
    ``scale`` (sx, sy) = resized / original, ``size`` (W, H) of the original, ``resized`` (W, H) before padding."""

    image: torch.Tensor
    mask: torch.Tensor | None
    scale: tuple[float, float]
    size: tuple[int, int]
    resized: tuple[int, int]


def to_original(points: torch.Tensor, scale: tuple[float, float]) -> torch.Tensor:
    """(M, 2) points of a resized image → points of the original, pixel-centre convention (see module doc)."""
    s = points.new_tensor(scale)
    return (points + 0.5) / s - 0.5


def target_size(width: int, height: int, resize: tuple[int, int] | None = None, max_size: int | None = None,
                ) -> tuple[int, int]:
    """(W, H) to resize to: ``resize`` exactly when given, else longest side = ``max_size`` (aspect kept; never
    upscales), else unchanged."""
    if resize is not None:
        return int(resize[0]), int(resize[1])
    if max_size is not None and max(width, height) > max_size:
        f = max_size / max(width, height)
        return max(int(round(width * f)), 1), max(int(round(height * f)), 1)
    return width, height


def prepare(image: ImageLike, *, resize: tuple[int, int] | None = None, max_size: int | None = None,
            divisor: int = 8, min_cells: int = 1) -> PreparedImage:
    """Grey, resized (area interpolation when shrinking, bilinear when growing), zero-padded at the bottom/right to
    a multiple of ``divisor`` with a mask of the valid pixels. Too small an image raises :class:`ImageError`."""
    grey = to_grey(image)
    h, w = grey.shape
    if h == 0 or w == 0:
        raise ImageError(f"the image is empty ({w}x{h})")
    tw, th = target_size(w, h, resize, max_size)
    if min(tw, th) < divisor * min_cells:
        raise ImageError(f"the image is too small: {tw}x{th} px (after resizing) but LoFTR needs at least "
                         f"{divisor * min_cells} px per side (one coarse cell)")
    t = grey[None, None]
    if (tw, th) != (w, h):
        mode = "area" if tw <= w and th <= h else "bilinear"
        t = F.interpolate(t, size=(th, tw), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    ph, pw = -th % divisor, -tw % divisor
    mask = None
    if ph or pw:
        t = F.pad(t, (0, pw, 0, ph))
        mask = torch.zeros((1, th + ph, tw + pw), dtype=torch.bool)
        mask[:, :th, :tw] = True
    return PreparedImage(t.contiguous(), mask, (tw / w, th / h), (w, h), (tw, th))
