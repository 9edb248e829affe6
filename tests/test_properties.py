"""Property-based tests (hypothesis): random sizes, aspect ratios, dtypes, channel counts and value ranges.

Whatever comes in, the API either raises :class:`ImageError` for exactly the inputs that cannot be used (a side under
one coarse cell, float data outside [0, 1] or not finite) or returns matches whose keypoints lie inside their images,
and the same input always gives the same matches. Hypothesis runs derandomized (a fixed seed, no example database),
so CI sees the same examples on every run.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from loftr import ImageError, LoFTR, Matches
from loftr.io import MAX_PIXELS, read_image, target_size
from loftr.matcher import Matcher

FAST = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

DTYPES = ["uint8", "uint16", "int32", "int64", "bool", "float16", "float32", "float64"]


@pytest.fixture(scope="module")
def net() -> LoFTR:
    return LoFTR("tiny_ds", weights="default")


def _side(draw, largest: int) -> int:
    """A side length: under one coarse cell one time in fifteen, else 40..largest (5 coarse cells: the 2-cell
    border that LoFTR drops leaves room for matches)."""
    return draw(st.integers(1, 7)) if draw(st.integers(0, 14)) == 0 else draw(st.integers(40, largest))


@st.composite
def images(draw) -> tuple[np.ndarray | torch.Tensor, bool]:
    """(image, usable): an array or tensor of random size, aspect, dtype, channels and value range, and whether
    the API must accept it."""
    h = _side(draw, 80)
    w = _side(draw, 80) if draw(st.booleans()) else _side(draw, 400)  # up to 1:400 (with the tiny sides)
    if draw(st.booleans()):
        h, w = w, h
    channels = draw(st.sampled_from([None, 1, 3, 4]))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (h, w) if channels is None else (h, w, channels)
    kind = draw(st.sampled_from(["noise"] * 4 + ["constant"] + (["bad"] if dtype.startswith("float") else [])))
    if dtype == "bool":
        arr = rng.random(shape) > (0.5 if kind == "noise" else 2.0)
    elif dtype.startswith("float"):
        arr = (rng.random(shape) if kind != "constant" else np.full(shape, rng.random())).astype(dtype)
        if kind == "bad":
            arr.flat[int(rng.integers(arr.size))] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1.5, -0.25, 255.0]))
    else:
        info = np.iinfo(dtype)
        lo, hi = draw(st.sampled_from([(0, 255), (0, 4095), (int(info.min), int(info.max)), (-1000, 1000)]))
        lo, hi = max(lo, int(info.min)), min(hi, int(info.max))
        arr = (rng.integers(lo, hi, shape, endpoint=True) if kind == "noise" else np.full(shape, lo)).astype(dtype)
    usable = min(h, w) >= 8 and kind != "bad"
    if draw(st.booleans()) and arr.dtype != np.uint16:  # the same image as a tensor, channels first
        t = torch.from_numpy(np.ascontiguousarray(arr))
        return (t.permute(2, 0, 1) if t.ndim == 3 else t), usable
    return arr, usable


@st.composite
def pairs(draw) -> tuple[tuple[object, bool], tuple[object, bool]]:
    """Two unrelated images, or an image and itself shifted by a few pixels (which has matches)."""
    first = draw(images())
    if draw(st.booleans()):
        return first, draw(images())
    shift = draw(st.integers(0, 12))
    image = first[0]
    moved = torch.roll(image, shift, dims=-1) if isinstance(image, torch.Tensor) else np.roll(image, shift, axis=1)
    return first, (moved, first[1])


def _size(image: np.ndarray | torch.Tensor) -> tuple[int, int]:
    """(W, H) of an image as given."""
    if isinstance(image, torch.Tensor):
        return int(image.shape[-1]), int(image.shape[-2])
    return int(image.shape[1]), int(image.shape[0])


def _inside(m: Matches, size0: tuple[int, int], size1: tuple[int, int]) -> None:
    for k, (w, h) in ((m.keypoints0, size0), (m.keypoints1, size1)):
        assert k.shape == (len(m), 2) and k.isfinite().all()
        assert (k >= -0.5).all() and (k[:, 0] <= w - 0.5).all() and (k[:, 1] <= h - 0.5).all()
    assert m.confidence.isfinite().all() and ((m.confidence >= 0) & (m.confidence <= 1)).all()
    assert (m.confidence[:-1] >= m.confidence[1:]).all()  # most confident first


@FAST
@given(pair=pairs(), max_size=st.sampled_from([None, 640, 640, 64, 24, 8]),
       threshold=st.sampled_from([0.0, 0.0, 0.05, None]))
def test_matcher_never_crashes_and_keypoints_lie_inside(net: LoFTR, pair, max_size: int | None,
                                                        threshold: float | None) -> None:
    (image0, usable0), (image1, usable1) = pair
    matcher = Matcher(net, max_size=max_size, threshold=threshold)
    if not (usable0 and usable1):
        event("refused")
        with pytest.raises(ImageError):
            matcher(image0, image1)
        return
    first = matcher(image0, image1)
    event("matched, some matches" if len(first) else "matched, no match")
    _inside(first, _size(image0), _size(image1))
    again = matcher(image0, image1)  # deterministic: bitwise the same
    for key, value in first.to_dict().items():
        assert torch.equal(value, again.to_dict()[key]), key


@FAST
@given(image=images(), shift=st.integers(0, 6))
def test_same_input_same_matches_across_matchers(net: LoFTR, image, shift: int) -> None:
    """A fresh Matcher of the same weights gives bitwise the same matches (no hidden state, no randomness)."""
    image0, usable = image
    if not usable:
        return
    if isinstance(image0, torch.Tensor):
        image1 = torch.roll(image0, shift, dims=-1)
    else:
        image1 = np.roll(image0, shift, axis=1)
    a = Matcher(net, threshold=0.0)(image0, image1)
    b = Matcher(LoFTR("tiny_ds", weights="default"), threshold=0.0)(image0, image1)
    assert all(torch.equal(x, y) for x, y in zip(a.to_dict().values(), b.to_dict().values()))


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(w=st.integers(1, 100_000), h=st.integers(1, 100_000), max_size=st.one_of(st.none(), st.integers(8, 4000)),
       max_pixels=st.one_of(st.none(), st.integers(64, 10_000_000)))
def test_target_size_keeps_aspect_never_upscales_and_respects_limits(w: int, h: int, max_size: int | None,
                                                                      max_pixels: int | None) -> None:
    uw, uh = target_size(w, h, None, max_size, min_side=8, max_pixels=None)
    assert 1 <= uw <= w and 1 <= uh <= h  # never upscaled
    if max_size is None:
        assert (uw, uh) == (w, h)
    elif min(w, h) >= 8:  # longest side max_size, unless the short side would fall under one coarse cell
        assert min(uw, uh) >= 8 and (max(uw, uh) == min(max_size, max(w, h)) or min(uw, uh) == 8)
    tw, th = target_size(w, h, None, max_size, min_side=8, max_pixels=max_pixels)
    if max_pixels is None or uw * uh <= max_pixels:
        assert (tw, th) == (uw, uh)
    else:
        assert tw <= uw and th <= uh and (tw * th <= max_pixels or min(tw, th) == 1)  # (1 px: refused later)
    if min(tw, th) >= 8:  # one scale factor for both sides: the aspect ratio is kept up to rounding
        assert abs(math.log((tw / th) / (w / h))) <= 2.5 / min(tw, th)
    assert target_size(w, h, None, max_size) == target_size(w, h, None, max_size, min_side=8, max_pixels=MAX_PIXELS)


FORMATS = {"PNG": ["L", "RGB", "RGBA", "P", "I;16", "1", "LA"], "JPEG": ["L", "RGB", "CMYK"],
           "TIFF": ["L", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "1"], "BMP": ["L", "RGB", "P"],
           "GIF": ["L", "P"], "WEBP": ["RGB", "RGBA"]}


@st.composite
def encoded_images(draw) -> tuple[bytes, tuple[int, int]]:
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(FORMATS[fmt]))
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.uint16))
    elif mode == "I":
        img = Image.fromarray(rng.integers(-2**20, 2**20, (h, w)).astype(np.int32))
    elif mode == "F":
        img = Image.fromarray((rng.random((h, w)) * draw(st.sampled_from([1.0, 1000.0]))).astype(np.float32))
    else:
        img = rgb.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue(), (w, h)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(encoded=encoded_images(), damage=st.sampled_from(["none", "truncate", "flip", "garbage-tail"]),
       where=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_decoding_any_file_gives_uint8_or_image_error(tmp_path_factory, encoded, damage: str, where: float,
                                                      seed: int) -> None:
    """Any format and mode decodes to (H, W) or (H, W, 3) uint8 of the right size; a damaged file either still
    decodes (the damage hit metadata or padding) or raises ImageError naming it, never anything else."""
    data, (w, h) = encoded
    rng = np.random.default_rng(seed)
    cut = int(where * len(data))
    if damage == "truncate":
        data = data[:cut]
    elif damage == "flip":
        data = bytearray(data)
        for i in rng.integers(0, len(data), 1 + len(data) // 200):
            data[i] ^= 0xFF
        data = bytes(data)
    elif damage == "garbage-tail":
        data = data[:cut] + rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    path = tmp_path_factory.mktemp("img") / "image.bin"
    path.write_bytes(data)
    try:
        arr = read_image(path)
    except ImageError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        assert damage != "none", exc
        return
    assert arr.dtype == np.uint8 and arr.ndim in (2, 3) and (arr.ndim == 2 or arr.shape[2] == 3)
    if damage == "none":
        assert (arr.shape[1], arr.shape[0]) == (w, h)
    assert math.prod(arr.shape[:2]) > 0
