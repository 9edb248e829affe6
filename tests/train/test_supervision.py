from __future__ import annotations

import numpy as np
import torch

from loftr.train.data import HomographyPairs, random_homography
from loftr.train.losses import coarse_focal_loss, fine_l2_std_loss
from loftr.train.supervision import coarse_supervision, fine_supervision, warp

from ..conftest import PHOTOS


def test_translation_by_one_cell_gives_shifted_matches() -> None:
    H = torch.eye(3, dtype=torch.float64)[None]
    H[0, 0, 2] = 8.0  # one coarse cell to the right
    sup = coarse_supervision(H, (4, 5), (4, 5), 8)
    assert len(sup.i_ids) == 4 * 4  # the last column leaves image1
    assert torch.equal(sup.j_ids, sup.i_ids + 1)
    assert sup.conf_gt.sum() == 16


def test_fine_targets_are_subcell_offsets_in_window_units() -> None:
    H = torch.eye(3, dtype=torch.float64)[None]
    H[0, 0, 2], H[0, 1, 2] = 2.0, -3.0
    sup = coarse_supervision(H, (4, 4), (4, 4), 8)
    target = fine_supervision(H, sup.b_ids, sup.i_ids, sup.j_ids, (4, 4), (4, 4), 8, 2, 5)
    torch.testing.assert_close(target, torch.tensor([[2.0, -3.0]]).expand_as(target) / 2 / 2)


def test_random_homography_is_invertible_and_moderate() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        H = random_homography(rng, 256)
        corners = torch.tensor([[[0.0, 0.0], [255.0, 0.0], [255.0, 255.0], [0.0, 255.0]]], dtype=torch.float64)
        moved = warp(corners, torch.from_numpy(H)[None])
        assert torch.isfinite(moved).all() and (moved - corners).norm(dim=-1).max() < 200


def test_dataset_pairs_follow_their_homography() -> None:
    import cv2
    import pytest

    if not PHOTOS.exists():
        pytest.skip("no shared photos")
    from loftr.train.data import list_images

    data = HomographyPairs(list_images(PHOTOS)[:4], size=128, length=2, seed=3)
    s = data[0]
    assert s.image0.shape == (1, 128, 128) and s.valid1.dtype == torch.bool
    again = data[0]
    assert torch.equal(s.image0, again.image0)  # reproducible
    # the true homography maps a textured point's neighbourhood onto the warped image (up to photometrics)
    warped = cv2.warpPerspective(s.image0[0].numpy(), s.H_0to1.numpy(), (128, 128))
    valid = s.valid1.numpy()
    corr = np.corrcoef(warped[valid], s.image1[0].numpy()[valid])[0, 1]
    assert corr > 0.6


def test_losses_prefer_the_right_answer() -> None:
    gt = torch.zeros(1, 4, 4)
    gt[0, 0, 0] = 1
    good = torch.full((1, 4, 4), 0.01)
    good[0, 0, 0] = 0.95
    bad = torch.full((1, 4, 4), 0.3)
    bad[0, 0, 0] = 0.05
    assert coarse_focal_loss(good, gt) < coarse_focal_loss(bad, gt)
    target = torch.tensor([[0.5, -0.5], [3.0, 0.0]])  # the second is outside the window: ignored
    near = torch.tensor([[0.5, -0.4, 0.1], [0.0, 0.0, 0.1]])
    far = torch.tensor([[-0.5, 0.5, 0.1], [3.0, 0.0, 0.1]])
    assert fine_l2_std_loss(near, target) < fine_l2_std_loss(far, target)
