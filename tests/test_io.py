from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from loftr.errors import ImageError
from loftr.io import prepare, read_image, to_grey


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = 255  # bright left band
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    out = read_image(tmp_path / "rot.jpg")
    assert out.shape[:2] == (40, 20)
    assert out[:10].mean() > 200 and out[-10:].mean() < 50  # the left band is now on top


def test_grey_from_every_input_kind() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    ref = to_grey(rgb)
    assert ref.shape == (16, 24) and ref.dtype == torch.float32
    torch.testing.assert_close(to_grey(torch.from_numpy(rgb).permute(2, 0, 1)), ref)
    torch.testing.assert_close(to_grey(torch.from_numpy(rgb).permute(2, 0, 1).float()[None] / 255), ref)
    assert to_grey(rgb[..., 0]).shape == (16, 24)
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        to_grey(np.full((8, 8), 3.0))


def test_prepare_pads_with_mask_and_keeps_aspect() -> None:
    img = np.zeros((100, 150), np.uint8)
    p = prepare(img, max_size=64)
    assert p.resized == (64, 43) and p.image.shape == (1, 1, 48, 64)
    assert p.mask is not None and p.mask[0, :43].all() and not p.mask[0, 43:].any()
    assert p.scale == pytest.approx((64 / 150, 43 / 100))
    exact = prepare(img, resize=(80, 80))
    assert exact.image.shape == (1, 1, 80, 80) and exact.mask is None
    assert prepare(np.zeros((40, 40), np.uint8), max_size=640).resized == (40, 40)  # never upscaled


def test_bad_inputs_have_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ImageError, match="not an image"):
        read_image(tmp_path / "notes.jpg")
    with pytest.raises(ImageError, match="too small"):
        prepare(np.zeros((5, 100), np.uint8))
    with pytest.raises(ImageError, match="shape"):
        to_grey(np.zeros((4, 4, 2)))


def test_grey_is_computed_as_before_and_never_writes_to_its_input() -> None:
    """Channel by channel (a 100-MP photo needs no float copy of all three): bitwise the reference formula."""
    rgb = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    t = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
    expected = (0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2]).clamp(0, 1)
    assert torch.equal(to_grey(rgb), expected)
    floats = t.clone()
    assert torch.equal(to_grey(floats), expected) and torch.equal(floats, t)
    frozen = rgb.copy()
    frozen.setflags(write=False)  # as Pillow hands out: used without a copy and without a warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(to_grey(frozen), expected)


def test_read_image_names_the_file_in_every_error(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png is empty \(0 bytes\)"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match=r"is not a file"):
        read_image(tmp_path)
    with pytest.raises(ImageError, match=re.escape(str(tmp_path / "t.png")) + ": the image is too small: 4x4 px"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "t.png")
        prepare(tmp_path / "t.png")
