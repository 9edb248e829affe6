"""Every bad input of docs/robustness.md, made for real: each gets a correct result or one line naming the problem.

The case ids below are the first column of the table in docs/robustness.md (a test checks that they agree).
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from loftr import ImageError, LoFTR, Matches
from loftr.cli import main
from loftr.io import prepare, read_image
from loftr.matcher import Matcher

DOC = Path(__file__).resolve().parents[1] / "docs" / "robustness.md"
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (60, 80, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, (60, 80), dtype=np.uint8)


@pytest.fixture(scope="module")
def net() -> LoFTR:
    torch.manual_seed(0)
    return LoFTR("tiny_ds", weights="default")


@pytest.fixture(scope="module")
def good_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "good.png"
    Image.fromarray(GREY).save(path)
    return path


def _encoded(array: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and header claiming ``width`` x ``height`` pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _write(name: str, data: bytes | str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        path = d / name
        path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
        return path

    return make


def _pil(name: str, array: np.ndarray, mode: str | None = None, **kw) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        img = Image.fromarray(array)
        (img.convert(mode) if mode else img).save(d / name, **kw)
        return d / name

    return make


def _float_rgb_tiff(d: Path) -> Path:
    import cv2

    cv2.imwrite(str(d / "float_rgb.tif"), RNG.random((40, 50, 3)).astype(np.float32))
    return d / "float_rgb.tif"


def _nan_float_tiff(d: Path) -> Path:
    data = RNG.random((40, 50)).astype(np.float32)
    data[5, 5] = np.nan
    Image.fromarray(data).save(d / "nan.tif")
    return d / "nan.tif"


def _directory(d: Path) -> Path:
    (d / "folder.png").mkdir()
    return d / "folder.png"


_JPEG = _encoded(RGB, "JPEG", quality=95)
_PNG = _encoded(RGB, "PNG")

# id, how to make the file, what the one-line error says
FILE_ERRORS: list[tuple[str, Callable[[Path], Path], str]] = [
    ("missing-file", lambda d: d / "missing.png", "does not exist"),
    ("directory", _directory, "is not a file"),
    ("empty-file", _write("empty.jpg", b""), "is empty (0 bytes)"),
    ("truncated-jpeg", _write("truncated.jpg", _JPEG[: len(_JPEG) // 2]), "is truncated or corrupt"),
    ("truncated-png", _write("truncated.png", _PNG[: len(_PNG) // 2]), "is truncated or corrupt"),
    ("random-bytes", _write("noise.jpg", RNG.integers(0, 256, 2000, dtype=np.uint8).tobytes()), "not an image"),
    ("text-file", _write("notes.png", "not an image\n"), "not an image"),
    ("svg", _write("vector.svg", "<svg xmlns='http://www.w3.org/2000/svg' width='9' height='9'/>"), "'.svg'"),
    ("pdf", _write("doc.pdf", b"%PDF-1.4\n%%EOF\n"), "'.pdf'"),
    ("float-rgb-tiff", _float_rgb_tiff, "TIFF variant Pillow cannot decode"),
    ("decompression-bomb", _write("bomb.png", _png_header_only(100_000, 100_000)), "too large to decode"),
    ("nan-float-tiff", _nan_float_tiff, "NaN or infinite samples"),
    ("one-pixel", _pil("one.png", np.zeros((1, 1), np.uint8)), "too small"),
    ("thinner-than-a-cell", _pil("thin.png", GREY[:5]), "too small"),
    ("too-elongated", _pil("strip.png", np.zeros((8, 300_000), np.uint8)), "too elongated"),
]


@pytest.mark.parametrize("case,make,expected", FILE_ERRORS, ids=[c[0] for c in FILE_ERRORS])
def test_bad_file_is_one_clear_error_naming_it(case: str, make, expected: str, tmp_path: Path, net: LoFTR) -> None:
    path = make(tmp_path)
    with pytest.raises(ImageError) as err:
        Matcher(net)(path, GREY)
    message = str(err.value)
    assert expected in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize("case,make,expected", FILE_ERRORS, ids=[c[0] for c in FILE_ERRORS])
def test_bad_file_on_the_command_line(case: str, make, expected: str, tmp_path: Path, weights_file: Path,
                                      good_file: Path, capsys) -> None:
    path = make(tmp_path)
    for args in ([str(path), str(good_file)], [str(good_file), str(path)]):
        rc = main(["match", *args, "--weights", str(weights_file)])
        err = capsys.readouterr().err
        assert rc == 1, err
        assert err.count("\n") == 1 and err.startswith("loftr: error: ") and expected in err and str(path) in err


def _check_rgb(expected: np.ndarray, tol: float = 0.0) -> Callable[[np.ndarray], None]:
    def check(arr: np.ndarray) -> None:
        assert arr.shape == expected.shape and arr.dtype == np.uint8
        assert np.abs(arr.astype(float) - expected.astype(float)).mean() <= tol

    return check


def _grey_16bit(d: Path) -> Path:
    Image.fromarray(GREY.astype(np.uint16) * 257).save(d / "g16.png")  # 0..255 → 0..65535
    return d / "g16.png"


def _grey_12bit(d: Path) -> Path:
    Image.fromarray((GREY.astype(np.uint16) * 16)).save(d / "g12.png")  # a 12-bit sensor in a 16-bit file
    return d / "g12.png"


def _rgb_16bit(d: Path) -> Path:
    import cv2

    cv2.imwrite(str(d / "rgb16.png"), (RGB[..., ::-1].astype(np.uint16) * 257))
    return d / "rgb16.png"


def _float_tiff(scale: float, offset: float) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        Image.fromarray((GREY.astype(np.float32) / 255 * scale + offset)).save(d / "f.tif")
        return d / "f.tif"

    return make


def _int32_tiff(d: Path) -> Path:
    Image.fromarray(GREY.astype(np.int32) * 1000 - 100_000).save(d / "i32.tif")
    return d / "i32.tif"


def _palette(name: str, **kw) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        _P_IMAGE.save(d / name, **kw)
        return d / name

    return make


def _multi_frame_tiff(d: Path) -> Path:
    Image.fromarray(RGB).save(d / "multi.tif", save_all=True, append_images=[Image.fromarray(255 - RGB)])
    return d / "multi.tif"


def _corrupt_exif(d: Path) -> Path:
    bad = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\xff\xff\xff\xff"
    Image.fromarray(RGB).save(d / "bad_exif.jpg", exif=bad, quality=95, subsampling=0)
    return d / "bad_exif.jpg"


def _exif_rotated(d: Path) -> Path:
    img = Image.fromarray(RGB)
    exif = img.getexif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise
    img.save(d / "rot.jpg", exif=exif.tobytes(), quality=95, subsampling=0)
    return d / "rot.jpg"


_P_IMAGE = Image.fromarray(RGB).quantize(64)
_PALETTE = np.asarray(_P_IMAGE.convert("RGB"))
_LAB_L = np.asarray(Image.fromarray(RGB).convert("LAB").getchannel(0))
_ROTATED = np.rot90(RGB, -1)

# id, how to make the file, what read_image must return
FILE_DECODED: list[tuple[str, Callable[[Path], Path], Callable[[np.ndarray], None]]] = [
    ("grey-8bit-png", _pil("g.png", GREY), _check_rgb(GREY)),
    ("rgb-jpeg", _pil("c.jpg", RGB, quality=95, subsampling=0), _check_rgb(RGB, tol=8)),
    ("rgba-png", _pil("a.png", np.dstack([RGB, GREY])), _check_rgb(RGB)),
    ("grey-alpha-png", _pil("la.png", GREY, "LA"), _check_rgb(GREY)),
    ("cmyk-jpeg", _pil("cmyk.jpg", RGB, "CMYK", quality=95), _check_rgb(RGB, tol=8)),
    ("palette-png", _palette("p.png"), _check_rgb(_PALETTE)),
    ("palette-transparency-png", _palette("pt.png", transparency=0), _check_rgb(_PALETTE)),
    ("bilevel-png", _pil("bw.png", (GREY > 127).astype(np.uint8) * 255, "1"),
     _check_rgb((GREY > 127).astype(np.uint8) * 255)),
    ("grey-16bit-png", _grey_16bit, _check_rgb(GREY)),
    ("grey-12bit-in-16bit-png", _grey_12bit,
     _check_rgb(np.rint(GREY.astype(float) * 16 / (int(GREY.max()) * 16) * 255).astype(np.uint8))),
    ("rgb-16bit-png", _rgb_16bit, _check_rgb(RGB)),
    ("float-tiff-unit-range", _float_tiff(1.0, 0.0), _check_rgb(GREY, tol=0.01)),
    ("float-tiff-any-range", _float_tiff(1000.0, -500.0),
     _check_rgb(np.rint((GREY - float(GREY.min())) / float(np.ptp(GREY)) * 255).astype(np.uint8), tol=0.01)),
    ("int32-tiff-negative", _int32_tiff,
     _check_rgb(np.rint((GREY - float(GREY.min())) / float(np.ptp(GREY)) * 255).astype(np.uint8), tol=0.01)),
    ("lab-tiff", _pil("lab.tif", RGB, "LAB"), _check_rgb(_LAB_L)),
    ("gif", _palette("g.gif"), _check_rgb(_PALETTE)),
    ("webp-lossless", _pil("w.webp", RGB, lossless=True), _check_rgb(RGB)),
    ("bmp", _pil("b.bmp", RGB), _check_rgb(RGB)),
    ("multi-frame-tiff", _multi_frame_tiff, _check_rgb(RGB)),
    ("exif-rotated-jpeg", _exif_rotated, _check_rgb(_ROTATED, tol=8)),
    ("corrupt-exif-jpeg", _corrupt_exif, _check_rgb(RGB, tol=8)),
    ("extreme-aspect", _pil("wide.png", RNG.integers(0, 256, (8, 2000), dtype=np.uint8)), lambda a: None),
]


@pytest.mark.parametrize("case,make,check", FILE_DECODED, ids=[c[0] for c in FILE_DECODED])
def test_every_kind_of_file_decodes_and_matches(case: str, make, check, tmp_path: Path, net: LoFTR) -> None:
    path = make(tmp_path)
    arr = read_image(path)
    check(arr)
    out = Matcher(net, threshold=0.0)(path, path)
    assert isinstance(out, Matches)
    _assert_inside(out, arr.shape[1], arr.shape[0])


def test_extreme_aspect_keeps_one_cell_on_its_short_side(net: LoFTR) -> None:
    strip = RNG.integers(0, 256, (8, 2000), dtype=np.uint8)
    assert prepare(strip, max_size=640).resized == (2000, 8)  # not 640x3, which no coarse cell fits
    assert prepare(np.zeros((16, 4000), np.uint8), max_size=640).resized == (2000, 8)
    assert prepare(np.zeros((100, 4000), np.uint8), max_size=640).resized == (640, 16)  # as before


def test_decompression_bomb_limits_follow_pillow(tmp_path: Path, monkeypatch) -> None:
    """Pillow warns between MAX_IMAGE_PIXELS and twice that (a 100-megapixel panorama) and refuses beyond: we
    decode the first silently and turn the second into an ImageError naming the file."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    Image.fromarray(GREY[:50, :60]).save(tmp_path / "large.png")  # 3000 px: over the limit, under twice it
    Image.fromarray(GREY).save(tmp_path / "huge.png")  # 4800 px: over twice the limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        assert read_image(tmp_path / "large.png").shape == (50, 60)
    with pytest.raises(ImageError, match=re.escape(str(tmp_path / "huge.png")) + " is too large to decode"):
        read_image(tmp_path / "huge.png")


def test_network_input_over_max_pixels_is_downscaled_with_a_warning(net: LoFTR, caplog) -> None:
    img = RNG.integers(0, 256, (120, 200), dtype=np.uint8)
    matcher = Matcher(net, max_size=None, max_pixels=6000, threshold=0.0)
    p = matcher.prepare(img)
    assert p.resized == (100, 60) and p.resized[0] * p.resized[1] <= 6000
    with caplog.at_level("WARNING", logger="loftr.io"):
        out = matcher(img, img)
    assert "200x120 px is over the 6000-pixel limit" in caplog.text and "matching at 100x60" in caplog.text
    _assert_inside(out, 200, 120)
    assert Matcher(net, max_size=None, max_pixels=None).prepare(img).resized == (200, 120)
    assert Matcher(net, resize=(400, 240), max_pixels=6000).prepare(img).resized == (100, 60)


# id, the image given to the API (image0), and the error or None when it matches
_NAN = np.full((40, 50), 0.5, np.float32)
_NAN[3, 4] = np.nan
_INF = torch.full((1, 1, 40, 50), 0.5)
_INF[..., 7, 7] = float("inf")
API_INPUTS: list[tuple[str, object, str | None]] = [
    ("nan-array", _NAN, "image0: the image holds NaN or infinite values"),
    ("inf-tensor", _INF, "image0: the image holds NaN or infinite values"),
    ("float-outside-0-1", GREY.astype(np.float32), "float images must hold values in [0, 1]"),
    ("complex-array", GREY.astype(np.complex64), "unsupported image array dtype complex64"),
    ("object-array", GREY.astype(object), "unsupported image array dtype object"),
    ("two-channel-array", np.zeros((40, 50, 2), np.uint8), "must be (H, W) or (H, W, 1|3|4)"),
    ("empty-array", np.zeros((0, 50), np.uint8), "the image is empty (50x0)"),
    ("uint16-array", GREY.astype(np.uint16) * 257, None),
    ("int64-array", GREY.astype(np.int64), None),
    ("big-endian-array", (GREY.astype(np.uint16) * 257).astype(">u2"), None),
    ("bool-array", GREY > 127, None),
    ("float16-array", (GREY / 255).astype(np.float16), None),
    ("float64-array", GREY / 255.0, None),
    ("rgba-array", np.dstack([RGB, GREY]), None),
    ("chw-uint8-tensor", torch.from_numpy(RGB).permute(2, 0, 1), None),
    ("nchw-float-tensor", torch.from_numpy(RGB).permute(2, 0, 1)[None].float() / 255, None),
    ("int32-tensor", torch.from_numpy(GREY.astype(np.int32)), None),
]


@pytest.mark.parametrize("case,image,error", API_INPUTS, ids=[c[0] for c in API_INPUTS])
def test_api_inputs(case: str, image, error: str | None, net: LoFTR) -> None:
    matcher = Matcher(net, threshold=0.0)
    if error is not None:
        with pytest.raises(ImageError, match=re.escape(error)):
            matcher(image, GREY)
        return
    out = matcher(image, GREY)
    size = image.shape[-2:] if isinstance(image, torch.Tensor) else image.shape[:2]
    _assert_inside(out, size[1], size[0])


def test_wide_integers_are_scaled_like_8_bit(net: LoFTR) -> None:
    """0..255 integers of any width are 8-bit values; 16-bit data is divided by its maximum."""
    matcher = Matcher(net, threshold=0.0)
    ref = matcher(GREY, GREY)
    for same in (GREY.astype(np.int64), GREY.astype(np.uint16) * 257, (GREY.astype(np.uint16) * 257).astype(">u2")):
        out = matcher(same, GREY)
        assert torch.equal(out.keypoints0, ref.keypoints0) and torch.equal(out.confidence, ref.confidence)


@pytest.mark.parametrize("weights", ["default", None], ids=["bundled", "random"])
def test_blank_and_uniform_images_give_zero_matches_and_no_nan(weights: str | None) -> None:
    torch.manual_seed(0)
    net = LoFTR("tiny_ds", weights=weights)
    for value in (0, 1, 128, 255):
        a, b = np.full((120, 160), value, np.uint8), np.full((96, 128), value, np.uint8)
        assert len(Matcher(net)(a, b)) == 0
        assert len(Matcher(net)(a / 255.0, torch.full((1, 96, 128), value / 255.0))) == 0
        every = Matcher(net, threshold=0.0)(a, b)  # threshold 0 keeps every mutual nearest neighbour
        assert all(t.isfinite().all() for t in every.to_dict().values()) and (every.confidence < 0.2).all()


@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
def test_nan_and_inf_given_to_the_module_give_zero_matches(fast: bool, net: LoFTR) -> None:
    """The nn.Module checks nothing (it is kornia's interface): a non-finite pixel spreads through the
    convolutions and no confidence passes a comparison, so the defined result is no match."""
    from loftr.model.optimize import optimize_for_inference

    model = optimize_for_inference(LoFTR("tiny_ds", weights="default")) if fast else net
    with torch.inference_mode():
        for value in (float("nan"), float("inf"), float("-inf")):
            x = torch.rand(1, 1, 64, 96, generator=torch.Generator().manual_seed(1))
            x[..., 30, 40] = value
            assert len(model.match(x, torch.rand(1, 1, 64, 96), thr=0.0)) == 0


def test_options_that_cannot_work_are_refused(net: LoFTR) -> None:
    from loftr import LoFTRError

    for kwargs, message in [({"max_size": 4}, "max_size must be at least 8"),
                            ({"resize": (640, 0)}, "resize must be (W, H)"),
                            ({"threshold": float("nan")}, "threshold must lie in [0, 1]"),
                            ({"threshold": 1.5}, "threshold must lie in [0, 1]"),
                            ({"max_matches": -1}, "max_matches must not be negative"),
                            ({"max_pixels": 10}, "max_pixels must be at least 64")]:
        with pytest.raises(LoFTRError, match=re.escape(message)):
            Matcher(net, **kwargs)


def _assert_inside(out: Matches, width: int, height: int) -> None:
    """Keypoints lie inside their image: pixel (0, 0) covers [-0.5, 0.5]², so [-0.5, W - 0.5] x [-0.5, H - 0.5]."""
    for k in (out.keypoints0, out.keypoints1):
        assert k.isfinite().all()
        assert (k >= -0.5).all() and (k[:, 0] <= width - 0.5).all() and (k[:, 1] <= height - 0.5).all()
    assert out.confidence.isfinite().all() and ((out.confidence >= 0) & (out.confidence <= 1)).all()


def test_the_docs_table_lists_every_case() -> None:
    text = DOC.read_text()
    ids = [c[0] for c in FILE_ERRORS] + [c[0] for c in FILE_DECODED] + [c[0] for c in API_INPUTS]
    missing = [i for i in ids if f"`{i}`" not in text]
    assert not missing, f"docs/robustness.md does not list {missing}"
