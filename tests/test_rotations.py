"""Test-time rotation: Matcher(rotations=2|4) / --rotations."""

from __future__ import annotations

import pytest
import torch

from loftr import LoFTRError, Matcher
from loftr.io import read_image, to_grey
from loftr.matcher import unrotate

from .conftest import TUM0, TUM1, photo


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_unrotate_inverts_rot90(k: int) -> None:
    image = torch.rand(5, 7, generator=torch.Generator().manual_seed(k))
    turned = torch.rot90(image, k, (0, 1))
    h, w = turned.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    points = torch.stack([xs.flatten(), ys.flatten()], 1).float()
    back = unrotate(points, k, (w, h)).round().long()
    assert torch.equal(image[back[:, 1], back[:, 0]], turned.flatten())


def test_rotations_find_the_turn_and_give_keypoints_in_the_original_frame() -> None:
    upright = to_grey(read_image(photo(TUM0)))
    turned = torch.rot90(to_grey(read_image(photo(TUM1))), 1, (0, 1))  # image1 turned by 90 degrees
    w0 = upright.shape[1]  # TUM1 has the same size
    plain = Matcher(max_size=320, threshold=0.2)(upright, turned)
    m = Matcher(max_size=320, threshold=0.2, rotations=4)(upright, turned)
    # where the points of TUM1 went in the turned image: (x, y) -> (y, W - 1 - x)
    expected = torch.stack([m.keypoints0[:, 1], w0 - 1 - m.keypoints0[:, 0]], 1)
    near = (m.keypoints1 - expected).norm(dim=1) < 40  # a handheld pair: a small motion between the frames
    assert len(m) > 100 and near.float().mean() > 0.8
    assert len(m) > 2 * len(plain)
    upright_pair = Matcher(max_size=320, threshold=0.2)(upright, to_grey(read_image(photo(TUM1))))
    same = Matcher(max_size=320, threshold=0.2, rotations=4)(upright, to_grey(read_image(photo(TUM1))))
    assert len(same) == len(upright_pair)  # no turn needed: the unturned matches stay


def test_rotations_option_is_checked() -> None:
    with pytest.raises(LoFTRError, match="rotations"):
        Matcher(rotations=3)
