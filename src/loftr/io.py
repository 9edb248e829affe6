"""Images in: decoding (EXIF orientation), grey conversion, resizing, padding to the coarse stride with masks.

Coordinates are (x, y) pixels with pixel centres at integers (OpenCV's convention): pixel (0, 0) covers
[-0.5, 0.5]². The network's coarse cell (c, r) is centred on input pixel (8c, 8r) (every strided convolution is
centred), so its keypoints are in that convention too, and a point of a resized image maps back to the original
exactly with ``original = (resized + 0.5) / scale - 0.5`` (:func:`to_original`).

What comes in is whatever users have (see docs/robustness.md for every case tried): files are decoded by Pillow,
first frame only, alpha ignored; 16-bit, 32-bit and float samples are scaled to 8 bits (:func:`read_image`);
anything that cannot be used raises :class:`ImageError` with one line naming the file and the problem. Sizes are
bounded twice: a file is not decoded beyond Pillow's decompression-bomb limit, and the network input is kept under
``max_pixels`` (:data:`MAX_PIXELS` by default) by downscaling with a logged warning, so that no image exhausts
the memory.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ImageError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

ImageLike = Union[str, Path, np.ndarray, torch.Tensor]

MAX_PIXELS = 1 << 21
"""Default limit on the pixels of one network input: 2,097,152 (1920×1080 fits). Larger inputs are downscaled,
aspect kept, with a warning. The reference model in float32 on the CPU needs about 1.2 GB per megapixel of each
image with ``outdoor_ds`` (measured: 1.9 GB more for a 1024×768 pair), so a pair at the limit takes about 5 GB."""

DEFAULT_MAX_SIZE = 1024
"""Default longest side of the network input (aspect kept, never upscaled) for matching, the CLI, the server and the
benchmarks that run "at the defaults". 640×480 frames are matched as they are; larger photos are shrunk to 1024 px
(hloc's choice for LoFTR too). Measured with the bundled model against the former default of 640 (training log,
docs/training_log.md): held-out castle scenes (1536×1024) pose AUC@5 53.7 → 60.3, Motorcycle (741×500, now at full
size) correct @3 px 2589 → 3545 at higher precision, WxBS level or better; the indoor fox frames (1920×1080) lose 2–3
AUC points.
The price is time on large photos (a castle pair: 0.8 s → 2.8 s on 2 CPU cores)."""

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file, applying its EXIF orientation → (H, W) or (H, W, 3) uint8.

    The first frame of multi-frame files; alpha is ignored; palette, CMYK, YCbCr, HSV and LA images become RGB or
    grey, LAB its lightness; 16/32-bit integer and float samples are scaled to 0..255 (see :func:`_to_uint8`).
    Raises :class:`ImageError` naming the file when it is missing, not a file, empty, not an image, truncated or
    corrupt, over Pillow's decompression-bomb limit (``2 * PIL.Image.MAX_IMAGE_PIXELS``, about 179 megapixels),
    holds NaN or infinite samples, or has a colour mode that has no grey or RGB conversion.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"image file {path} does not exist")
    if not path.is_file():
        raise ImageError(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path} is empty (0 bytes)")
    img = _decode(path)
    with img:
        arr = _pixels(_exif_oriented(img, path), path)
    if arr.size == 0:
        raise ImageError(f"{path} has no pixels ({arr.shape[1]}x{arr.shape[0]})")
    return arr


def _decode(path: Path) -> "Image.Image":
    """Open and fully decode the first frame with Pillow; every failure becomes one :class:`ImageError`."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that: large photos and panoramas are expected here
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except UnidentifiedImageError:
            raise ImageError(f"{path} is not an image that can be read ({_unidentified(path)})") from None
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{path} is too large to decode: {exc} Downscale it, or raise "
                             "PIL.Image.MAX_IMAGE_PIXELS if you trust the file") from None
        except Exception as exc:  # noqa: BLE001 - a hostile header can break a decoder in many ways
            raise ImageError(f"cannot read image {path}: {_first_line(exc)}") from None
    try:
        img.load()
    except MemoryError:
        img.close()
        raise ImageError(f"{path}: not enough memory to decode {img.size[0]}x{img.size[1]} px") from None
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data: the decoders raise OSError and others
        img.close()
        raise ImageError(f"{path} is truncated or corrupt: {_first_line(exc)}") from None
    return img


def _unidentified(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if head in _TIFF_MAGIC:
        return "a TIFF variant Pillow cannot decode, e.g. floating-point colour samples"
    return f"unrecognised format{' ' + repr(path.suffix) if path.suffix else ''}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else "") or type(exc).__name__


def _exif_oriented(img: "Image.Image", path: Path) -> "Image.Image":
    """The image turned upright by its EXIF orientation tag (unchanged when there is none or it is unreadable)."""
    from PIL import ImageOps

    try:
        orientation = img.getexif().get(0x0112, 1)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001 - metadata of a hostile file; the pixels are still usable
        log.warning("%s: ignoring its unreadable EXIF orientation (%s)", path, _first_line(exc))
    return img


def _pixels(img: "Image.Image", path: Path) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 from any Pillow mode."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return np.asarray(img)
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode in ("LA", "La", "LAB"):  # grey + alpha, or CIE L*a*b*: the first band is the lightness
        return np.asarray(img.getchannel(0))
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or 32-bit float samples
        return _to_uint8(np.asarray(img), path)
    try:
        return np.asarray(img.convert("RGB"))
    except ValueError:
        raise ImageError(f"{path} has colour mode {mode!r}, which cannot be converted to RGB") from None


def _integer_range(lo: float, hi: float) -> tuple[float, float]:
    """(offset, scale) that bring integer samples in [lo, hi] to [0, 1]: 0..255 are 8-bit values; non-negative
    data beyond 255 (16-bit, 12-bit in 16...) is divided by its maximum; data with negative values is stretched."""
    if lo >= 0 and hi <= 255:
        return 0.0, 255.0
    if lo >= 0:
        return 0.0, hi
    return lo, (hi - lo) or 1.0


def _to_uint8(arr: np.ndarray, path: Path) -> np.ndarray:
    """Integer or float samples of a file → uint8: integers by :func:`_integer_range`, floats in [0, 1] × 255,
    other floats stretched from their min..max (a constant image becomes black); NaN or ±inf is refused."""
    if arr.size == 0:
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ImageError(f"{path} holds NaN or infinite samples")
        lo, hi = float(arr.min()), float(arr.max())
        offset, scale = (0.0, 1.0) if lo >= 0 and hi <= 1 else (lo, (hi - lo) or 1.0)
    else:
        offset, scale = _integer_range(float(arr.min()), float(arr.max()))
    unit = (arr.astype(np.float32) - np.float32(offset)) * np.float32(255.0 / scale)
    return np.rint(np.clip(unit, 0, 255, out=unit), out=unit).astype(np.uint8)


def to_grey(image: ImageLike) -> torch.Tensor:
    """Any accepted image → (H, W) float32 tensor in [0, 1].

    Accepts a path (:func:`read_image`), a numpy array (H, W) or (H, W, 1|3|4), or a tensor (H, W), (C, H, W) or
    (1, C, H, W) with C in 1, 3, 4, of dtype uint8 (/ 255), bool, other integers (see :func:`_integer_range`) or
    float in [0, 1]. Colour becomes grey with the ITU-R 601 weights (as OpenCV does); a 4th channel (alpha) is
    ignored. Float data with NaN, ±inf or values outside [0, 1] raise :class:`ImageError`.
    """
    if isinstance(image, (str, Path)):
        image = read_image(image)
    if isinstance(image, np.ndarray):
        t = _channels_first_array(image)
    elif isinstance(image, torch.Tensor):
        t = _channels_first_tensor(image)
    else:
        raise ImageError(f"unsupported image type {type(image).__name__}: give a path, a numpy array or a tensor")
    return _grey(t)


def _channels_first_array(arr: np.ndarray) -> torch.Tensor:
    if arr.dtype.kind not in "biuf":
        raise ImageError(f"unsupported image array dtype {arr.dtype}: give uint8, other integers, bool or float")
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        arr = arr[..., :3]
    elif arr.ndim == 2:
        arr = arr[..., None]
    else:
        raise ImageError(f"an image array must be (H, W) or (H, W, 1|3|4), got shape {arr.shape}")
    if arr.dtype.kind in "iu" and arr.dtype != np.uint8:
        arr = _integer_to_unit(arr)
    elif not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    with warnings.catch_warnings():  # a read-only array (e.g. from Pillow) is fine: it is never written to
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)


def _integer_to_unit(arr: np.ndarray) -> np.ndarray:
    if arr.size == 0:
        return arr.astype(np.float32)
    offset, scale = _integer_range(float(arr.min()), float(arr.max()))
    return (arr.astype(np.float32) - np.float32(offset)) / np.float32(scale)


def _channels_first_tensor(image: torch.Tensor) -> torch.Tensor:
    t = image.detach()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
        raise ImageError(f"an image tensor must be (H, W), (C, H, W) or (1, C, H, W), got {tuple(image.shape)}")
    if t.is_complex():
        raise ImageError(f"unsupported image tensor dtype {t.dtype}")
    t = t[:3].cpu()
    if not t.is_floating_point() and t.dtype not in (torch.uint8, torch.bool):
        t = torch.from_numpy(_integer_to_unit(t.numpy()))
    return t


def _grey(t: torch.Tensor) -> torch.Tensor:
    """(1|3, H, W) uint8, bool or float → (H, W) float32 in [0, 1], one channel at a time (little memory)."""
    if t.is_floating_point() and t.numel():
        if not torch.isfinite(t).all():
            raise ImageError("the image holds NaN or infinite values")
        lo, hi = float(t.min()), float(t.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ImageError(f"float images must hold values in [0, 1], this one spans [{lo:.4g}, {hi:.4g}] "
                             "(divide 8-bit data by 255)")

    def channel(i: int) -> torch.Tensor:
        return t[i].float() / 255.0 if t.dtype == torch.uint8 else t[i].float()

    if t.shape[0] == 1:
        return channel(0).clamp(0, 1)
    grey = 0.299 * channel(0)
    grey += 0.587 * channel(1)
    grey += 0.114 * channel(2)
    return grey.clamp_(0, 1)


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


def target_size(width: int, height: int, resize: tuple[int, int] | None = None, max_size: int | None = None, *,
                min_side: int = 8, max_pixels: int | None = MAX_PIXELS) -> tuple[int, int]:
    """(W, H) to resize to: ``resize`` exactly when given, else longest side = ``max_size`` (aspect kept; never
    upscales) without bringing the short side below ``min_side`` (an elongated image shrinks less), else unchanged.
    Then, when W·H exceeds ``max_pixels``, both sides shrink by one factor until it fits."""
    if resize is not None:
        tw, th = int(resize[0]), int(resize[1])
    elif max_size is not None and max(width, height) > max_size:
        f = max_size / max(width, height)
        short = min(width, height)
        if short * f < min_side:
            f = min(1.0, min_side / short)
        tw, th = max(int(round(width * f)), 1), max(int(round(height * f)), 1)
    else:
        tw, th = width, height
    if max_pixels is not None and tw * th > max_pixels:
        f = math.sqrt(max_pixels / (tw * th))
        tw, th = max(int(tw * f), 1), max(int(th * f), 1)
    return tw, th


def prepare(image: ImageLike, *, resize: tuple[int, int] | None = None, max_size: int | None = None,
            divisor: int = 8, min_cells: int = 1, max_pixels: int | None = MAX_PIXELS,
            name: str | None = None) -> PreparedImage:
    """Grey, resized (area interpolation when shrinking, bilinear when growing), zero-padded at the bottom/right to
    a multiple of ``divisor`` with a mask of the valid pixels.

    The size comes from :func:`target_size`: an input over ``max_pixels`` is downscaled with a logged warning. An
    image with fewer than ``divisor * min_cells`` pixels on a side (one coarse cell) raises :class:`ImageError`.
    Errors and warnings name the file when ``image`` is a path, else ``name`` when given (e.g. "image0")."""
    is_path = isinstance(image, (str, Path))
    where = f"{image}: " if is_path else (f"{name}: " if name else "")
    try:
        grey = to_grey(image)
    except ImageError as exc:
        if is_path or not where:  # read_image names the file itself
            raise
        raise ImageError(f"{where}{exc}") from None
    h, w = grey.shape
    if h == 0 or w == 0:
        raise ImageError(f"{where}the image is empty ({w}x{h})")
    need = divisor * min_cells
    tw, th = target_size(w, h, resize, max_size, min_side=need, max_pixels=max_pixels)
    uw, uh = target_size(w, h, resize, max_size, min_side=need, max_pixels=None)
    if min(tw, th) < need:
        if min(uw, uh) >= need:
            raise ImageError(f"{where}the image is too elongated: {w}x{h} px would be {uw}x{uh} px at the network "
                             f"(at least {need} px per side), over the limit of {max_pixels} pixels (max_pixels)")
        raise ImageError(f"{where}the image is too small: {tw}x{th} px"
                         f"{' (after resizing)' if (tw, th) != (w, h) else ''} but LoFTR needs at least {need} px "
                         "per side (one coarse cell)")
    if (tw, th) != (uw, uh):
        log.warning("%s%dx%d px is over the %d-pixel limit of the network input: matching at %dx%d instead (give "
                    "a larger max_pixels / --max-pixels if the memory allows)", where, uw, uh, max_pixels, tw, th)
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
