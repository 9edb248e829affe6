"""Test-time scale: Matcher(scales=...) / --scales."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from loftr import LoFTRError, Matcher
from loftr.io import read_image, to_grey
from loftr.options import add_model_args, matcher_kwargs

from .conftest import TUM0, TUM1, photo

ZOOM = 3


def _zoomed_pair() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A photo and its centre third enlarged 3x (the same view at 3x the scale), and the crop's corner (x, y)."""
    image = to_grey(read_image(photo(TUM0)))
    h, w = image.shape
    ch, cw = h // ZOOM, w // ZOOM
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = image[y0:y0 + ch, x0:x0 + cw]
    zoomed = F.interpolate(crop[None, None], size=(ch * ZOOM, cw * ZOOM), mode="bilinear", align_corners=False)
    return image, zoomed[0, 0], torch.tensor([x0, y0], dtype=torch.float32)


def _correct(wide: torch.Tensor, near: torch.Tensor, corner: torch.Tensor) -> torch.Tensor:
    """Which matches (keypoints of the wide view, of the enlarged view) are within 6 px of the true enlargement."""
    return ((near - ((wide - corner + 0.5) * ZOOM - 0.5)).norm(dim=1) < 6)


def test_scales_match_a_3x_zoom_and_give_keypoints_in_the_original_pixels() -> None:
    image, zoomed, corner = _zoomed_pair()
    plain = Matcher(max_size=320)(image, zoomed)
    m = Matcher(max_size=320, scales=(0.35,))(image, zoomed)
    assert len(m) > 30 and _correct(m.keypoints0, m.keypoints1, corner).float().mean() > 0.6
    assert _correct(m.keypoints0, m.keypoints1, corner).sum() > 3 * _correct(plain.keypoints0, plain.keypoints1,
                                                                              corner).sum()
    swapped = Matcher(max_size=320, scales=(0.35,))(zoomed, image)  # the near view first: image0 is shrunk
    assert len(swapped) > 30 and _correct(swapped.keypoints1, swapped.keypoints0, corner).float().mean() > 0.6


def test_scales_keep_the_plain_matches_of_a_pair_at_one_scale() -> None:
    image0, image1 = photo(TUM0), photo(TUM1)
    plain = Matcher(max_size=320)(image0, image1)
    searched = Matcher(max_size=320, scales=(0.5,))(image0, image1)
    assert len(plain) > 100 and torch.equal(searched.keypoints0, plain.keypoints0)


def test_scales_with_rotations_find_a_turned_zoom() -> None:
    image, zoomed, corner = _zoomed_pair()
    turned = torch.rot90(zoomed, 2, (0, 1))  # and turned by 180 degrees
    m = Matcher(max_size=320, scales=(0.35,), rotations=2)(image, turned)
    h, w = zoomed.shape
    unturned = torch.stack([w - 1 - m.keypoints1[:, 0], h - 1 - m.keypoints1[:, 1]], 1)  # keypoints1 are turned's
    assert len(m) > 30 and _correct(m.keypoints0, unturned, corner).float().mean() > 0.6


def test_scales_option_is_checked_and_parsed() -> None:
    for bad in [(1.0,), (0.0,), (-0.5,), (2,)]:
        with pytest.raises(LoFTRError, match="scales"):
            Matcher(scales=bad)
    import argparse

    p = argparse.ArgumentParser()
    add_model_args(p)
    assert matcher_kwargs(p.parse_args(["--scales", "0.5", "0.25"]))["scales"] == (0.5, 0.25)
    assert matcher_kwargs(p.parse_args([]))["scales"] == ()


def test_search_below_skips_the_search_of_a_pair_that_matches_well(caplog) -> None:
    image0, image1 = photo(TUM0), photo(TUM1)
    plain = Matcher(max_size=320)(image0, image1)
    with caplog.at_level("INFO", logger="loftr.matcher"):
        skipped = Matcher(max_size=320, scales=(0.5,), search_below=20)(image0, image1)
    assert "skipped" in caplog.text and torch.equal(skipped.keypoints1, plain.keypoints1)
    image, zoomed, corner = _zoomed_pair()  # a 3x zoom has few verified matches as given: it is searched
    caplog.clear()
    with caplog.at_level("INFO", logger="loftr.matcher"):
        m = Matcher(max_size=320, scales=(0.35,), search_below=10_000)(image, zoomed)
    assert "skipped" not in caplog.text and _correct(m.keypoints0, m.keypoints1, corner).float().mean() > 0.6


def test_search_below_is_checked_and_parsed() -> None:
    for bad in [0, -3, 2.5, True]:
        with pytest.raises(LoFTRError, match="search_below"):
            Matcher(scales=(0.5,), search_below=bad)
    with pytest.raises(LoFTRError, match="rotations or scales"):
        Matcher(search_below=100)
    import argparse

    p = argparse.ArgumentParser()
    add_model_args(p)
    assert matcher_kwargs(p.parse_args(["--scales", "0.5", "--search-below", "150"]))["search_below"] == 150
    assert matcher_kwargs(p.parse_args([]))["search_below"] is None
