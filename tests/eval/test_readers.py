"""Each dataset reader on tiny files in the official formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loftr.errors import LoFTRError
from loftr.eval.homography import read_hpatches
from loftr.eval.middlebury import read_pairs
from loftr.eval.pose import read_megadepth, read_scannet, scale_intrinsics
from loftr.eval.stereo import middlebury, middlebury_scenes, read_pfm
from loftr.eval.synthetic import read_synthetic
from loftr.eval.wxbs import read_wxbs

from .datasets import hpatches_h, write_hpatches, write_megadepth, write_middlebury, write_scannet, write_wxbs
from .scenes import K_TINY, texture, write_pfm


@pytest.mark.parametrize("rel_pose,scans_test", [(True, False), (False, False), (False, True)])
def test_scannet_reads_pairs_poses_and_rescales_intrinsics(tmp_path: Path, rel_pose: bool, scans_test: bool) -> None:
    index, truths = write_scannet(tmp_path, rel_pose=rel_pose, scans_test=scans_test)
    loaded = read_scannet(index, tmp_path)
    assert [p.name for p in loaded.pairs] == ["scene0707_00/0-15", "scene0708_01/100-115"] and not loaded.skipped
    assert [(p.image0.name, p.image1.name) for p in loaded.pairs] == [("0.jpg", "15.jpg"), ("100.jpg", "115.jpg")]
    for pair, T in zip(loaded.pairs, truths, strict=True):
        assert pair.image0.is_file() and pair.image1.parent.name == "color"
        np.testing.assert_allclose(pair.T_0to1, T, atol=1e-9)
        # K of the 640x480 image, rescaled to the 160x120 files: the camera the views were rendered with
        np.testing.assert_allclose(pair.K0, K_TINY, atol=1e-9)
        np.testing.assert_allclose(pair.K1, K_TINY, atol=1e-9)


def test_scannet_skips_missing_images_and_fails_clearly(tmp_path: Path) -> None:
    index, _ = write_scannet(tmp_path)
    (tmp_path / "scene0708_01" / "color" / "115.jpg").unlink()
    loaded = read_scannet(index, tmp_path)
    assert len(loaded.pairs) == 1 and loaded.skipped == ("scene0708_01/100-115",)
    with pytest.raises(LoFTRError, match="none of the 2 pairs"):
        read_scannet(index, tmp_path / "elsewhere")
    with pytest.raises(LoFTRError, match="intrinsics file"):
        read_scannet(index, tmp_path, intrinsics=tmp_path / "nope.npz")


def test_scale_intrinsics_maps_pixel_centres() -> None:
    K = scale_intrinsics(K_TINY, (160, 120), (320, 240))
    # the centre of pixel (0, 0) of the small image covers pixels 0-1 of the big one: centre at 0.5
    p_small = K_TINY @ np.array([0.1, -0.2, 1.0])
    p_big = K @ np.array([0.1, -0.2, 1.0])
    np.testing.assert_allclose(p_big[:2], (p_small[:2] + 0.5) * 2 - 0.5)


def test_megadepth_reads_list_file_folder_and_single_npz(tmp_path: Path) -> None:
    listing, truths = write_megadepth(tmp_path)
    npz = listing.parent / "scene_info_val_1500" / "0015_0.1_0.3.npz"
    for index, npz_dir in ((listing, npz.parent), (npz.parent, None), (npz, None)):
        loaded = read_megadepth(index, tmp_path, npz_dir)
        assert [p.name for p in loaded.pairs] == ["0015_0.1_0.3/000-002", "0015_0.1_0.3/000-003"]
        for pair, (T, K0, K1) in zip(loaded.pairs, truths, strict=True):
            assert pair.image0.is_file() and pair.split == "megadepth"
            np.testing.assert_allclose(pair.T_0to1, T)
            np.testing.assert_allclose(pair.K0, K0)
            np.testing.assert_allclose(pair.K1, K1)
    # a root inside Undistorted_SfM works too
    assert len(read_megadepth(npz, tmp_path / "Undistorted_SfM").pairs) == 2
    with pytest.raises(LoFTRError, match="MegaDepth scene info"):
        read_megadepth(listing, tmp_path)  # the list's own folder has no npz


def test_hpatches_pairs_splits_and_homographies(tmp_path: Path) -> None:
    write_hpatches(tmp_path)
    loaded = read_hpatches(tmp_path)
    assert len(loaded.pairs) == 10 and not loaded.skipped
    assert {p.split for p in loaded.pairs[:5]} == {"illumination"} and {p.split for p in loaded.pairs[5:]} == {
        "viewpoint"}
    v3 = next(p for p in loaded.pairs if p.name == "v_tiny/1-3")
    np.testing.assert_allclose(v3.H_0to1, hpatches_h(3, True))
    assert v3.size0 == v3.size1 == (160, 120) and v3.image0.name == "1.ppm" and v3.image1.name == "3.ppm"
    (tmp_path / "v_tiny" / "H_1_4").unlink()
    assert read_hpatches(tmp_path).skipped == ("v_tiny/1-4",)
    with pytest.raises(LoFTRError, match="no HPatches sequences"):
        read_hpatches(tmp_path / "i_tiny")


def test_wxbs_reads_categories_corrs_and_skips_incomplete(tmp_path: Path) -> None:
    write_wxbs(tmp_path)
    loaded = read_wxbs(tmp_path)
    assert [p.name for p in loaded.pairs] == ["WGBS/room", "WLABS/room_dark"]
    assert [p.split for p in loaded.pairs] == ["WGBS", "WLABS"] and loaded.skipped == ("WGABS/broken",)
    corrs = np.loadtxt(tmp_path / "WGBS" / "room" / "corrs.txt")
    np.testing.assert_array_equal(loaded.pairs[0].corrs, corrs)
    assert loaded.limited(1).pairs == loaded.pairs[:1]
    with pytest.raises(LoFTRError, match="at least 1"):
        loaded.limited(0)
    (tmp_path / "WGBS" / "room" / "corrs.txt").write_text("1 2 3\n")
    with pytest.raises(LoFTRError, match="4 numbers"):
        read_wxbs(tmp_path)


@pytest.mark.parametrize("little_endian", [True, False])
def test_pfm_round_trip_grey_and_colour(tmp_path: Path, little_endian: bool) -> None:
    rng = np.random.default_rng(0)
    grey = rng.normal(size=(5, 7)).astype(np.float32)
    grey[0, 0] = np.inf
    np.testing.assert_array_equal(read_pfm(write_pfm(tmp_path / "g.pfm", grey, little_endian)), grey)
    colour = rng.normal(size=(4, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(read_pfm(write_pfm(tmp_path / "c.pfm", colour, little_endian)), colour)


def test_pfm_errors_are_clear(tmp_path: Path) -> None:
    (tmp_path / "bad.pfm").write_bytes(b"P6\n2 2\n255\n" + bytes(12))
    with pytest.raises(LoFTRError, match="not a PFM"):
        read_pfm(tmp_path / "bad.pfm")
    (tmp_path / "short.pfm").write_bytes(b"Pf\n4 4\n-1.0\n" + bytes(8))
    with pytest.raises(LoFTRError, match="truncated"):
        read_pfm(tmp_path / "short.pfm")


def test_middlebury_folder_and_motorcycle(tmp_path: Path) -> None:
    folder, disparity = write_middlebury(tmp_path)
    pair = middlebury(folder)
    np.testing.assert_allclose(pair.disparity, disparity.astype(np.float32))
    assert pair.left.name == "im0.png" and pair.name == "Room-perfect"
    assert [p.name for p in middlebury_scenes(tmp_path)] == ["Room-perfect"]
    assert [p.name for p in read_pairs(folder).pairs] == ["Room-perfect"]
    (folder / "disp0.pfm").unlink()
    with pytest.raises(LoFTRError, match="lacks disp0.pfm"):
        middlebury(folder)
    moto = read_pairs(None).pairs[0]
    assert moto.name == "motorcycle" and moto.disparity.shape == (500, 741)


def test_synthetic_pairs_are_seeded_and_prefix_stable(tmp_path: Path) -> None:
    import cv2

    for name in ("camera", "coffee", "chelsea"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), texture(name, (150, 100)))
    a = read_synthetic(tmp_path, seed=3).pairs
    b = read_synthetic(tmp_path, seed=3, limit=2).pairs
    c = read_synthetic(tmp_path, seed=4).pairs
    assert len(a) == 3 and [p.name for p in b] == [p.name for p in a[:2]]
    np.testing.assert_array_equal(a[1].image1, b[1].image1)
    np.testing.assert_array_equal(a[1].H_0to1, b[1].H_0to1)
    assert not np.allclose(a[0].H_0to1, c[0].H_0to1)
    assert a[0].image0.shape == (100, 150) and a[0].size0 == (150, 100)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoFTRError, match="no images"):
        read_synthetic(tmp_path / "empty")


def test_wxbs_shared_data_ground_truth_fits_our_epipolar_convention() -> None:
    """On the real WxBS files: F fitted to a pair's own GT correspondences (8-point, 01 → 02) puts them within
    5 px, and the F of the swapped order does not — the reader's orientation and the metric agree."""
    import cv2

    from loftr.eval.wxbs import gt_epipolar_errors

    from .conftest import SHARED

    if not (SHARED / "data" / "wxbs").is_dir():
        pytest.skip("shared WxBS data not available")
    loaded = read_wxbs(SHARED / "data" / "wxbs")
    assert len(loaded.pairs) + len(loaded.skipped) == 34
    for pair in loaded.pairs:
        F, _ = cv2.findFundamentalMat(pair.corrs[:, :2], pair.corrs[:, 2:], cv2.FM_8POINT)
        F_swapped, _ = cv2.findFundamentalMat(pair.corrs[:, 2:], pair.corrs[:, :2], cv2.FM_8POINT)
        assert np.mean(gt_epipolar_errors(F, pair.corrs) < 5) > 0.9, pair.name
        assert np.median(gt_epipolar_errors(F_swapped, pair.corrs)) > 10, pair.name
