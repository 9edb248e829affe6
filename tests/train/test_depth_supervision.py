"""Ground truth from depth + intrinsics + pose against the plane-induced homography, occlusions, scales, holes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loftr.train.supervision import (FAR, coarse_supervision, depth_coarse_supervision, fine_supervision,
                                     fine_targets, warp_depth)

from .scenes import CAMERAS, K160, board, plane_homography, render, wall


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))[None]


def _pairs(sup) -> set[tuple[int, int]]:
    return set(zip(sup.i_ids.tolist(), sup.j_ids.tolist()))


@pytest.fixture(scope="module")
def plane_views():
    plane = wall()
    (_, d0), (_, d1) = render([plane], CAMERAS[0]), render([plane], CAMERAS[1])
    H = plane_homography(K160, K160, CAMERAS[0], CAMERAS[1], plane)
    T = CAMERAS[1] @ np.linalg.inv(CAMERAS[0])
    return d0, d1, T, H


def test_depth_ground_truth_equals_the_plane_homography(plane_views) -> None:
    d0, d1, T, H = plane_views
    hw = (15, 20)  # 160x120 network input, the depth maps' own pixels
    sup = depth_coarse_supervision(_t(d0), _t(d1), _t(K160), _t(K160), _t(T), hw, hw, 8)
    ref = coarse_supervision(_t(H), hw, hw, 8)
    got, want = _pairs(sup), _pairs(ref)
    # the same mutual cells; depth only loses cells whose centre lands within half a cell outside the depth map
    assert got <= want and len(got) >= 0.9 * len(want) and len(got) > 100
    assert torch.equal(sup.conf_gt.sum(2).clamp(max=1), sup.conf_gt.sum(2))  # one-to-one
    assert torch.equal(sup.conf_gt.sum(1).clamp(max=1), sup.conf_gt.sum(1))
    # fine targets: the homography's sub-pixel offsets, for the ground truth and for arbitrary (wrong) selections
    torch.testing.assert_close(fine_targets(sup, sup.b_ids, sup.i_ids, sup.j_ids, 2, 5),
                               fine_supervision(_t(H), sup.b_ids, sup.i_ids, sup.j_ids, hw, hw, 8, 2, 5),
                               atol=1e-5, rtol=0)
    assert (fine_targets(sup, sup.b_ids, sup.i_ids, sup.j_ids, 2, 5).abs() <= 1.0).all()
    shifted = (sup.j_ids + 1).clamp(max=hw[0] * hw[1] - 1)
    torch.testing.assert_close(fine_targets(sup, sup.b_ids, sup.i_ids, shifted, 2, 5),
                               fine_supervision(_t(H), sup.b_ids, sup.i_ids, shifted, hw, hw, 8, 2, 5),
                               atol=1e-5, rtol=0)


def test_scale_relates_network_pixels_to_depth_pixels(plane_views) -> None:
    d0, d1, T, H = plane_views
    hw = (6, 8)  # a 64x48 network input of the 160x120 views: 2.5 depth pixels per network pixel
    scale = torch.tensor([[2.5, 2.5]], dtype=torch.float64)
    sup = depth_coarse_supervision(_t(d0), _t(d1), _t(K160), _t(K160), _t(T), hw, hw, 8, scale, scale)
    S = np.diag([2.5, 2.5, 1.0])
    H_net = np.linalg.inv(S) @ H @ S  # the reference's convention: x_depth = x_network * scale
    ref = coarse_supervision(_t(H_net), hw, hw, 8)
    assert _pairs(sup) <= _pairs(ref) and len(_pairs(sup)) >= 0.8 * len(_pairs(ref)) and len(_pairs(sup)) > 15
    torch.testing.assert_close(fine_targets(sup, sup.b_ids, sup.i_ids, sup.j_ids, 2, 5),
                               fine_supervision(_t(H_net), sup.b_ids, sup.i_ids, sup.j_ids, hw, hw, 8, 2, 5),
                               atol=1e-5, rtol=0)


def _occluded_in_view1(points_world: np.ndarray, T1: np.ndarray, occluder) -> np.ndarray:
    """Whether the segment from camera 1 to each point crosses the bounded occluder square (z = const)."""
    centre = -T1[:3, :3].T @ T1[:3, 3]
    z = occluder.origin[2]
    lam = (z - centre[2]) / (points_world[:, 2] - centre[2])
    cross = centre + lam[:, None] * (points_world - centre)
    a, b = cross[:, 0] - occluder.origin[0], cross[:, 1] - occluder.origin[1]
    return (lam > 0) & (lam < 1) & (a >= 0) & (a <= occluder.extent[0]) & (b >= 0) & (b <= occluder.extent[1])


def test_depth_consistency_check_rejects_occluded_points() -> None:
    back, front = wall(4.0), board(2.0)
    T0, T1 = CAMERAS[0], CAMERAS[0].copy()
    T1[0, 3] = -0.5  # camera 1 half a metre to the right: the board hides another part of the wall
    (_, d0), (_, d1) = render([back, front], T0), render([back, front], T1)
    ys, xs = np.mgrid[2:118:2, 2:158:2]
    pix = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)
    z = d0[ys.ravel(), xs.ravel()].astype(np.float64)
    world = np.concatenate([pix, np.ones((len(pix), 1))], 1) @ np.linalg.inv(K160).T * z[:, None]  # camera 0 = world
    occluded = _occluded_in_view1(world, T1, front) & (np.abs(z - 4.0) < 1e-3)
    args = (_t(pix), _t(d0), _t(d1), _t(T1 @ np.linalg.inv(T0)), _t(K160), _t(K160))
    checked, warped = warp_depth(*args)
    unchecked, _ = warp_depth(*args, depth_tol=None)
    checked, unchecked = checked[0].numpy(), unchecked[0].numpy()
    u, v = warped[0, :, 0].numpy(), warped[0, :, 1].numpy()
    inside = (u > 2) & (u < 157) & (v > 2) & (v < 117)
    # away from the board's outline (one pixel of rounding either way), the check decides exactly by occlusion
    margin = np.ones_like(occluded)
    for dx, dy in ((-1.5, 0), (1.5, 0), (0, -1.5), (0, 1.5)):
        shifted = np.concatenate([pix + [dx, dy], np.ones((len(pix), 1))], 1) @ np.linalg.inv(K160).T * z[:, None]
        margin &= _occluded_in_view1(shifted, T1, front) == occluded
    clear = inside & margin
    assert occluded[clear].sum() > 100
    assert not checked[clear & occluded].any()
    assert checked[clear & ~occluded].all()
    assert unchecked[clear].all()  # without the check an occluded point is a (wrong) match
    # coarse level: no ground-truth match starts from a wall point hidden in view 1
    hw = (15, 20)
    sup = depth_coarse_supervision(*(_t(x) for x in (d0, d1, K160, K160, T1 @ np.linalg.inv(T0))), hw, hw, 8)
    loose = depth_coarse_supervision(*(_t(x) for x in (d0, d1, K160, K160, T1 @ np.linalg.inv(T0))), hw, hw, 8,
                                     depth_check=False)
    assert _pairs(sup) <= _pairs(loose)
    cells = np.stack([(sup.i_ids % 20).numpy() * 8, (sup.i_ids // 20).numpy() * 8], -1).astype(np.float64)
    zc = d0[cells[:, 1].astype(int), cells[:, 0].astype(int)].astype(np.float64)
    wc = np.concatenate([cells, np.ones((len(cells), 1))], 1) @ np.linalg.inv(K160).T * zc[:, None]
    assert not (_occluded_in_view1(wc, T1, front) & (np.abs(zc - 4.0) < 1e-3)).any()


def test_unknown_depth_and_padding_give_no_ground_truth(plane_views) -> None:
    d0, d1, T, _ = plane_views
    d0 = d0.copy()
    d0[40:80, 56:104] = 0.0  # a hole: cells (5..9, 7..12)
    hw = (15, 20)
    mask1 = torch.ones(1, 120, 160, dtype=torch.bool)
    mask1[:, 96:] = False  # the last 3 rows of cells of image1 are padding
    sup = depth_coarse_supervision(_t(d0), _t(d1), _t(K160), _t(K160), _t(T), hw, hw, 8, mask1=mask1)
    rows, cols = sup.i_ids // 20, sup.i_ids % 20
    assert not ((rows >= 5) & (rows < 10) & (cols >= 7) & (cols < 13)).any()
    assert (sup.j_ids // 20 < 12).all()
    hole = torch.tensor([7 * 20 + 9])
    assert (fine_targets(sup, torch.zeros(1, dtype=torch.long), hole, hole, 2, 5).abs() > FAR / 100).all()
    assert len(sup.i_ids) > 60
