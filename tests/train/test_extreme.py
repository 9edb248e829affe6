"""Extreme-view homographies: the sampler's promised ranges read back from the matrices, the co-visibility floor,
supervision under strong foreshortening and behind the camera, rendering, the dataset and the training option."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from loftr.cli import main
from loftr.train.config import TrainConfig, config_from_dict
from loftr.train.data import HomographyPairs, list_images
from loftr.train.sampling import build_datasets
from loftr.train.supervision import FAR, coarse_supervision, fine_supervision
from loftr.train.warps import (ExtremeWarp, camera_homography, covisible_share, local_affine, render_view,
                               sample_extreme, view_geometry)

from .scenes import grey_texture

SIZE = 288


def _apply(H: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) points through H → (K, 2) points and their w (K,)."""
    q = np.c_[pts, np.ones(len(pts))] @ H.T
    return q[:, :2] / q[:, 2:], q[:, 2]


def _centre_geometry(H: np.ndarray, size: int = SIZE) -> tuple[float, float, float]:
    """(zoom, tilt, roll) of H at the point of image0 that lands at the centre of image1 (the look-at point)."""
    c = (size - 1) / 2.0
    p, _ = _apply(np.linalg.inv(H), np.array([[c, c]]))
    return view_geometry(local_affine(H, tuple(p[0])))


@pytest.mark.parametrize("zoom,tilt,axis,roll,fov", [(1.0, 0.0, 0.0, 0.0, 50.0), (4.0, 74.0, 20.0, -30.0, 70.0),
                                                     (0.25, 70.0, 135.0, 170.0, 40.0), (2.0, 45.0, 90.0, 10.0, 60.0)])
def test_camera_homography_has_the_asked_geometry(zoom: float, tilt: float, axis: float, roll: float,
                                                  fov: float) -> None:
    look_at = (100.0, 170.0)
    H = camera_homography(SIZE, look_at, tilt, axis, zoom, roll, fov)
    centre, w = _apply(H, np.array([look_at]))
    np.testing.assert_allclose(centre[0], [(SIZE - 1) / 2] * 2, atol=1e-6)  # the look-at point at image1's centre
    assert w[0] > 0 and np.linalg.det(H) > 0
    got = view_geometry(local_affine(H, look_at))
    np.testing.assert_allclose(got, (zoom, tilt, roll), atol=1e-6)


def test_sampled_warps_cover_the_promised_ranges() -> None:
    cfg = ExtremeWarp(max_rotation=30.0)
    rng = np.random.default_rng(11)
    draws = [sample_extreme(rng, SIZE, cfg) for _ in range(400)]
    zoom, tilt, roll = np.array([_centre_geometry(H) for H in draws]).T
    covisible = np.array([covisible_share(H, SIZE) for H in draws])
    # inside the ranges ...
    assert zoom.min() >= 1 / 4 - 1e-6 and zoom.max() <= 4 + 1e-6
    assert tilt.min() >= 0 and tilt.max() <= 75 + 1e-6 and np.abs(roll).max() <= 30 + 1e-6
    assert (covisible >= cfg.min_covisible).all() and all(np.linalg.det(H) > 0 for H in draws)
    # ... and spread over them: both zoom directions to 3x and beyond, tilts beyond 60° and 70°, both roll signs
    assert (zoom > 3).mean() > 0.05 and (zoom < 1 / 3).mean() > 0.05
    assert (tilt > 60).mean() > 0.12 and (tilt > 70).mean() > 0.03
    assert (roll > 20).mean() > 0.1 and (roll < -20).mean() > 0.1
    # the mild random_homography of the same crops never went beyond ±30° rotation and 1.33x: these do
    assert (np.abs(roll) > 25).any() and (zoom > 1.5).mean() > 0.2


def test_covisible_floor_is_enforced_and_measured() -> None:
    assert covisible_share(np.eye(3), SIZE) == 1.0
    away = np.array([[1.0, 0, 2 * SIZE], [0, 1, 0], [0, 0, 1]])
    assert covisible_share(away, SIZE) == 0.0
    zoom_out = np.array([[0.5, 0, 0], [0, 0.5, 0], [0, 0, 1]])  # image0 fills a quarter of image1
    assert abs(covisible_share(zoom_out, SIZE) - 0.25) < 0.03
    strict = ExtremeWarp(min_covisible=0.4)
    rng = np.random.default_rng(3)
    assert all(covisible_share(sample_extreme(rng, SIZE, strict), SIZE) >= 0.4 for _ in range(60))
    # a floor no draw meets falls back to a pure roll (no tilt, no zoom) instead of a useless pair
    fallback = sample_extreme(rng, SIZE, ExtremeWarp(min_covisible=0.999, tries=2))
    zoom, tilt, _ = _centre_geometry(fallback)
    assert abs(zoom - 1) < 1e-6 and tilt < 1e-3


def _check_positives(H: np.ndarray, hw: tuple[int, int], stride: int = 8):
    sup = coarse_supervision(torch.from_numpy(H)[None], hw, hw, stride)
    i, j = sup.i_ids.numpy(), sup.j_ids.numpy()
    ci = np.c_[i % hw[1], i // hw[1]] * stride
    cj = np.c_[j % hw[1], j // hw[1]] * stride
    fwd, w_fwd = _apply(H, ci)
    back, w_back = _apply(np.linalg.inv(H), cj)
    assert (w_fwd > 0).all() and (w_back > 0).all()
    assert (np.abs(fwd - cj) <= stride / 2 + 1e-9).all()  # i's centre lands in cell j ...
    assert (np.abs(back - ci) <= stride / 2 + 1e-9).all()  # ... and j's centre back in cell i
    assert len(np.unique(i)) == len(i) and len(np.unique(j)) == len(j)  # one-to-one
    target = fine_supervision(torch.from_numpy(H)[None], sup.b_ids, sup.i_ids, sup.j_ids, hw, hw, stride, 2, 5)
    assert (target.abs() <= 1.0 + 1e-6).all()  # inside the 5x5 fine window
    return sup


def _cells_needing_a_match(H: np.ndarray, hw: tuple[int, int], stride: int = 8) -> np.ndarray:
    """Cells of image1 whose centre comes from well inside image0 where H shrinks by more than √2 (so the cell of
    image0 there lands back in this cell whatever its sub-cell offset): each must be matched."""
    ys, xs = np.mgrid[0:hw[0], 0:hw[1]]
    cj = np.c_[xs.ravel(), ys.ravel()] * stride
    back, w = _apply(np.linalg.inv(H), cj)
    inside = (w > 0) & (back > stride).all(1) & (back < np.array([hw[1], hw[0]]) * stride - 2 * stride).all(1)
    shrink = np.array([np.linalg.norm(local_affine(H, tuple(p)), 2) if ok else np.inf for p, ok in zip(back, inside)])
    return np.flatnonzero(inside & (shrink < 0.7))


def test_supervision_of_strongly_foreshortened_pairs() -> None:
    hw = (SIZE // 8, SIZE // 8)
    # image1 a zoomed-out, tilted view: up to ~30 cells of image0 land in one cell of image1
    H = camera_homography(SIZE, (140.0, 150.0), 72.0, 30.0, 0.3, 40.0, 60.0)
    sup = _check_positives(H, hw)
    centres = np.c_[np.arange(hw[0] * hw[1]) % hw[1], np.arange(hw[0] * hw[1]) // hw[1]] * 8.0
    landed, w = _apply(H, centres)
    lands_in1 = (w > 0) & (landed > -4).all(1) & (landed < SIZE - 4).all(1)
    assert lands_in1.sum() > 5 * len(sup.i_ids)  # many cells of image0 per matched cell of image1
    needed = _cells_needing_a_match(H, hw)
    assert len(needed) > 40 and set(needed.tolist()) <= set(sup.j_ids.tolist())
    # the same pair the other way round (a tilted close-up): every compressed cell of image0 is matched
    sup_inv = _check_positives(np.linalg.inv(H), hw)
    assert set(needed.tolist()) <= set(sup_inv.i_ids.tolist())
    assert len(sup_inv.i_ids) == len(sup.i_ids)


def test_points_behind_the_second_camera_are_not_matched() -> None:
    hw = (SIZE // 8, SIZE // 8)
    # a grazing close-up: the far part of the crop lies behind camera 1 (w < 0) and a homography alone maps it,
    # mirrored, into image1
    H = camera_homography(SIZE, (143.5, 143.5), 75.0, 0.0, 4.0, 0.0, 75.0)
    centres = np.c_[np.arange(hw[0] * hw[1]) % hw[1], np.arange(hw[0] * hw[1]) // hw[1]] * 8.0
    landed, w = _apply(H, centres)
    behind = w <= 0
    mirrored_inside = behind & (landed > -4).all(1) & (landed < SIZE - 4).all(1)
    assert mirrored_inside.any()  # the case this test is about
    sup = _check_positives(H, hw)
    assert not np.isin(sup.i_ids.numpy(), np.flatnonzero(behind)).any() and len(sup.i_ids) > 20
    assert (sup.w_pt0_i[0, torch.from_numpy(behind)] == FAR).all()
    flipped = coarse_supervision(torch.from_numpy(-H)[None], hw, hw, 8)  # the overall sign of H does not matter
    assert torch.equal(flipped.conf_gt, sup.conf_gt)


def test_render_view_shows_the_photo_in_front_only() -> None:
    photo = grey_texture("camera", 256)
    # looking across the photo with the horizon inside image1: the upper rows see no plane
    H = camera_homography(256, (127.5, 200.0), 70.0, 180.0, 1.0, 0.0, 75.0)
    image, valid = render_view(photo, H, 256)
    xs, ys = np.meshgrid(np.arange(256.0), np.arange(256.0))
    back, w = _apply(np.linalg.inv(H), np.c_[xs.ravel(), ys.ravel()])
    w = w.reshape(256, 256)
    assert (w <= 0).any() and not valid[w <= 0].any() and (image[~valid] == 0).all()
    naive = cv2.warpPerspective(np.ones_like(photo), H, (256, 256), flags=cv2.INTER_NEAREST) > 0.5
    assert (naive & (w <= 0)).any()  # a plain warp shows the mirrored photo above the horizon
    # where the view magnifies, the rendering is the plain bilinear warp; where it shrinks, an area average
    close = camera_homography(256, (127.5, 127.5), 20.0, 60.0, 2.0, 15.0, 50.0)
    image, valid = render_view(photo, close, 256)
    plain = cv2.warpPerspective(photo, close, (256, 256), flags=cv2.INTER_LINEAR)
    assert valid.all() and np.abs(image - plain).max() < 1e-5
    far = camera_homography(256, (127.5, 127.5), 0.0, 0.0, 0.25, 0.0, 50.0)
    image, valid = render_view(photo, far, 256)
    blurred = cv2.resize(photo, (64, 64), interpolation=cv2.INTER_AREA)
    inner = image[97:159, 97:159]  # the 64-px quarter-size photo sits at the centre
    assert abs(valid.mean() - 1 / 16) < 0.01
    assert np.abs(inner - blurred[1:63, 1:63]).mean() < 0.03


def test_dataset_mixes_in_extreme_views(photo_dir: Path) -> None:
    images = list_images(photo_dir)
    mild = HomographyPairs(images, size=64, length=8, seed=2)
    mixed = HomographyPairs(images, size=64, length=8, seed=2, extreme_share=0.5)
    extreme = HomographyPairs(images, size=64, length=8, seed=2, extreme_share=1.0)
    kinds = []
    for k in range(8):
        a, b = mild[k], mixed[k]
        same = torch.equal(a.H_0to1, b.H_0to1) and torch.equal(a.image1, b.image1)
        kinds.append(not same)
        if same:
            assert torch.equal(a.image0, b.image0)
        else:
            assert torch.equal(b.H_0to1, extreme[k].H_0to1)  # an extreme pair is the same in any mix
    assert 0 < sum(kinds) < 8  # the mild pairs of a mix are exactly those of a run without extreme views
    for k in range(8):
        s = extreme[k]
        H = s.H_0to1.numpy()
        assert covisible_share(H, 64) >= ExtremeWarp().min_covisible
        # image1 follows H where it shows image0 (up to the photometric changes)
        warped = cv2.warpPerspective(s.image0[0].numpy(), H, (64, 64), flags=cv2.INTER_LINEAR)
        ys, xs = np.mgrid[0:64, 0:64]
        back, w = _apply(np.linalg.inv(H), np.c_[xs.ravel(), ys.ravel()])
        shows0 = ((w > 0) & (back > 1).all(1) & (back < 62).all(1)).reshape(64, 64) & s.valid1.numpy()
        if shows0.sum() > 100:
            assert np.corrcoef(warped[shows0], s.image1[0].numpy()[shows0])[0, 1] > 0.6
    with pytest.raises(ValueError, match="extreme_share"):
        HomographyPairs(images, extreme_share=1.5)


def test_option_is_checked_built_recorded_and_resumed(photo_dir: Path, tmp_path: Path) -> None:
    old = {"images": str(photo_dir), "out_dir": str(tmp_path / "old"), "dataset": "photos"}
    cfg = config_from_dict(old)  # a config.json written before the option still loads, without extreme views
    assert cfg.extreme_share == 0.0 and cfg.extreme_rotation == 45.0
    data, val, _ = build_datasets(TrainConfig(**{**old, "extreme_share": 0.25, "extreme_rotation": 90.0}))
    assert data.extreme_share == 0.25 and data.extreme.max_rotation == 90.0 and val.extreme_share == 0.0
    for bad, match in (({"extreme_share": 1.5}, "extreme_share must be in"),
                       ({"extreme_rotation": 200.0}, "extreme_rotation in"),
                       ({"extreme_share": 0.5, "dataset": "scannet"}, "homographic photo pairs"),
                       ({"extreme_share": 0.5, "dataset": "mixed", "scene_share": 1.0}, "homographic photo pairs")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(**{**old, **bad})

    run = tmp_path / "run"
    args = ["train", "--data", str(photo_dir), "--out", str(run), "--size", "64", "--batch-size", "2",
            "--steps", "1", "--warmup", "1", "--checkpoint-every", "1", "--validate-every", "100", "--val-pairs", "1",
            "--model-overrides", json.dumps({"match_coarse": {"train_pad_num_gt_min": 4}}),
            "--extreme-share", "1", "--extreme-rotation", "90", "--threads", "1"]
    assert main(args) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["extreme_share"] == 1.0 and saved["extreme_rotation"] == 90.0
    assert main(["train", "--out", str(run), "--resume", "--steps", "2"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["extreme_share"] == 1.0 and saved["extreme_rotation"] == 90.0 and saved["steps"] == 2
    assert torch.load(run / "last.pt", weights_only=True)["config"]["extreme_share"] == 1.0
