from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import loftr
from loftr import LoFTR, Matches
from loftr.matcher import Matcher
from loftr.weights import save_safetensors

from .conftest import TUM0, TUM1, photo


@pytest.fixture(scope="module")
def tiny() -> LoFTR:
    torch.manual_seed(0)
    return LoFTR("tiny_ds")


class _Fixed(LoFTR):
    """A LoFTR whose matches are known: cell centres of a 2x2 grid, shifted by +4 px in image1."""

    def match(self, image0, image1, mask0=None, mask1=None, thr=None, max_std=None):  # noqa: D401
        k0 = torch.tensor([[8.0, 8.0], [16.0, 8.0], [8.0, 16.0]])
        return Matches(k0, k0 + 4, torch.tensor([0.3, 0.9, 0.5]), torch.zeros(3, dtype=torch.long))


def test_keypoints_come_back_in_original_pixels() -> None:
    m = Matcher(_Fixed("tiny_ds"), max_size=100)
    out = m(np.zeros((300, 400), np.uint8), np.zeros((200, 200), np.uint8))
    # image0 scaled by 100/400, image1 by 100/200; most confident first
    torch.testing.assert_close(out.confidence, torch.tensor([0.9, 0.5, 0.3]))
    # pixel-centre convention: original = (resized + 0.5) / scale - 0.5
    torch.testing.assert_close(out.keypoints0[0], (torch.tensor([16.0, 8.0]) + 0.5) * 4 - 0.5)
    torch.testing.assert_close(out.keypoints1[0], (torch.tensor([20.0, 12.0]) + 0.5) * 2 - 0.5)
    assert len(Matcher(_Fixed("tiny_ds"), max_matches=2)(np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8))) == 2


def test_default_size_shrinks_large_photos_to_1024_and_keeps_vga_frames() -> None:
    m = Matcher(_Fixed("tiny_ds"))
    assert m.max_size == loftr.io.DEFAULT_MAX_SIZE == 1024
    assert m.prepare(np.zeros((2048, 3072), np.uint8)).resized == (1024, 683)
    assert m.prepare(np.zeros((480, 640), np.uint8)).resized == (640, 480)
    assert m.prepare(np.zeros((500, 741), np.uint8)).resized == (741, 500)


def test_blank_images_give_zero_matches_without_nan(tiny: LoFTR) -> None:
    m = Matcher(tiny)
    for value in (0, 255):
        out = m(np.full((120, 160), value, np.uint8), np.full((96, 128), value, np.uint8))
        assert len(out) == 0 and out.keypoints0.shape == (0, 2)


def test_kornia_style_call_returns_new_dict(tiny: LoFTR) -> None:
    data = {"image0": torch.rand(2, 1, 64, 80), "image1": torch.rand(2, 1, 64, 80)}
    keys = set(data)
    out = tiny(data)
    assert set(data) == keys
    assert set(out) == {"keypoints0", "keypoints1", "confidence", "batch_indexes"}
    assert out["keypoints0"].shape[1] == 2


def test_padded_batch_masks_keep_matches_inside_valid_area(tiny: LoFTR) -> None:
    img0 = torch.rand(1, 1, 96, 128)
    img1 = torch.rand(1, 1, 96, 128)
    mask = torch.zeros(1, 96, 128, dtype=torch.bool)
    mask[:, :64, :96] = True
    out = tiny.match(img0, img1, mask, mask, thr=0.0)
    assert len(out) > 0
    # border removal (2 cells) measured from the valid extent (8 x 12 cells)
    assert (out.keypoints0[:, 0] <= 8 * (12 - 3)).all() and (out.keypoints0[:, 1] <= 8 * (8 - 3)).all()
    assert (out.keypoints0 >= 16).all()


def test_match_function_on_real_pair_with_file_weights(tiny: LoFTR, tmp_path: Path) -> None:
    path = save_safetensors(tiny, tmp_path / "tiny.safetensors", preset="tiny_ds")
    out = loftr.match(photo(TUM0), photo(TUM1), weights=path, max_size=320, threshold=0.0)
    assert isinstance(out, Matches) and len(out) > 0
    k = out.numpy()
    assert k["keypoints0"].dtype == np.float32
    assert (k["keypoints0"][:, 0] < 640).all() and (k["keypoints0"][:, 1] < 480).all()  # original 640x480 frame
    assert k["keypoints0"].max() > 320  # i.e. scaled back up from 320x240


def test_max_std_drops_the_matches_with_a_flat_fine_heat_map(tiny: LoFTR) -> None:
    img0, img1 = (Matcher(tiny, max_size=320).prepare(photo(p)).image for p in (TUM0, TUM1))
    with torch.inference_mode():
        out = tiny.run(img0, img1, thr=0.0)  # tiny_ds itself keeps every match (fine_max_std None)
        std = out.expec_f[:, 2]
        limit = float(std.quantile(0.9))  # 10 % of the matches are wider: all of them go
        kept = tiny.match(img0, img1, thr=0.0, max_std=limit)
    assert tiny.config.fine_max_std is None and len(out.matches) == len(std) > 20
    expected = out.matches.select(std <= limit)
    assert 0 < len(kept) == len(expected) < len(out.matches)
    torch.testing.assert_close(kept.keypoints1, expected.keypoints1)
    # the same through the config, and 0 in the Matcher turns the config's filter off
    filtered = LoFTR("tiny_ds", config=dataclasses.replace(tiny.config, fine_max_std=limit))
    filtered.load_state_dict(tiny.state_dict())
    with torch.inference_mode():
        assert len(filtered.match(img0, img1, thr=0.0)) == len(kept)
        assert len(filtered.match(img0, img1, thr=0.0, max_std=0)) == len(out.matches)
        # half of them wider than the limit: only the widest 20 % go
        assert len(tiny.match(img0, img1, thr=0.0, max_std=float(std.median()))) == len(std) - int(0.2 * len(std))
    with pytest.raises(loftr.LoFTRError, match="max_std"):
        Matcher(tiny, max_std=-1.0)
