"""ScanNet and MegaDepth loaders on a tiny rendered scene in the official layouts, and the step sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from loftr.train.datasets import MegaDepthPairs, ScanNetPairs, collate_depth, index_files
from loftr.train.supervision import coarse_supervision, fine_supervision, fine_targets
from loftr.train.objective import supervise
from loftr.train.sampling import StepSampler

from .scenes import CAMERAS, K160, plane_homography, wall, write_megadepth, write_scannet


def _pairs(sup) -> set[tuple[int, int, int]]:
    return set(zip(sup.b_ids.tolist(), sup.i_ids.tolist(), sup.j_ids.tolist()))


def _check_against_homographies(batch, views: list[tuple[int, int]], scale: float, hw: tuple[int, int],
                                rows: int | None = None) -> None:
    """The batch's depth ground truth matches the plane-induced homographies in network pixels (where both cells lie
    in the first ``rows`` rows: the image above the padding)."""
    plane = wall()
    S = np.diag([scale, scale, 1.0])
    H = torch.from_numpy(np.stack([np.linalg.inv(S) @ plane_homography(K160, K160, CAMERAS[a], CAMERAS[b], plane) @ S
                                   for a, b in views]))
    sup = supervise(batch, hw, hw, 8)
    ref = coarse_supervision(H, hw, hw, 8)
    rows = rows or hw[0]
    want = {(b, i, j) for b, i, j in _pairs(ref) if i // hw[1] < rows and j // hw[1] < rows}
    assert _pairs(sup) <= want and len(_pairs(sup)) >= 0.8 * len(want) > 0
    torch.testing.assert_close(fine_targets(sup, sup.b_ids, sup.i_ids, sup.j_ids, 2, 5),
                               fine_supervision(H, sup.b_ids, sup.i_ids, sup.j_ids, hw, hw, 8, 2, 5),
                               atol=2e-3, rtol=0)  # depth stored in millimetres


def test_scannet_layout(tmp_path: Path) -> None:
    root, index = write_scannet(tmp_path, [wall()])
    data = ScanNetPairs(root, index, size=(96, 72))  # intrinsics.npz found two folders up; overlap > 0.4
    assert len(data) == 2
    s = data[0]
    assert s.image0.shape == (1, 72, 96) and s.depth0.shape == (120, 160) and s.mask0 is None
    torch.testing.assert_close(s.scale0, torch.tensor([160 / 96, 120 / 72], dtype=torch.float64))
    torch.testing.assert_close(s.T_0to1, torch.from_numpy(CAMERAS[1] @ np.linalg.inv(CAMERAS[0])), atol=1e-9, rtol=0)
    assert abs(float(s.depth0[60, 80]) - 3.0) < 1e-6
    batch = collate_depth([data[0], data[1]])
    assert batch.image0.shape == (2, 1, 72, 96) and batch.mask0 is None
    _check_against_homographies(batch, [(0, 1), (0, 2)], 160 / 96, (9, 12))
    # the same pairs through a .txt list of names and with every overlap
    (index / "train.txt").write_text("scene0007_00\n")
    assert len(ScanNetPairs(root, index / "train.txt", tmp_path / "index" / "intrinsics.npz", (96, 72),
                            min_overlap=0.0)) == 3
    lonely = tmp_path / "lonely" / "scene0007_00.npz"
    lonely.parent.mkdir()
    lonely.write_bytes((index / "scene0007_00.npz").read_bytes())
    with pytest.raises(FileNotFoundError, match="no intrinsics.npz"):
        ScanNetPairs(root, lonely)


def test_megadepth_layout(tmp_path: Path) -> None:
    info = write_megadepth(tmp_path, [wall()])
    data = MegaDepthPairs(tmp_path, info.parent, size=64)  # overlap 0.0 is dropped (strictly above 0.0)
    assert len(data) == 2
    s = data[0]
    assert s.image0.shape == (1, 64, 64) and s.depth0.shape == (120, 160)
    assert s.mask0[:48].all() and not s.mask0[48:].any() and (s.image0[0, 48:] == 0).all()
    torch.testing.assert_close(s.scale0, torch.tensor([2.5, 2.5], dtype=torch.float64))
    batch = collate_depth([data[0], data[1]])
    assert batch.mask0.shape == (2, 64, 64)
    _check_against_homographies(batch, [(0, 1), (0, 2)], 2.5, (8, 8), rows=6)
    sup = supervise(batch, (8, 8), (8, 8), 8)
    assert (sup.i_ids // 8 < 6).all() and (sup.j_ids // 8 < 6).all()  # nothing in the padding
    assert index_files(info) == [info]


def test_step_sampler_shards_and_resumes() -> None:
    # 2 ranks, batch 3, 10 pairs: distinct samples per step, every pair once per epoch
    ranks = [list(StepSampler(10, 3, 0, 5, world=2, rank=r, seed=4)) for r in range(2)]
    for step in range(5):
        a, b = ranks[0][3 * step:3 * step + 3], ranks[1][3 * step:3 * step + 3]
        if (step * 6) // 10 == (step * 6 + 5) // 10:  # the step lies inside one epoch
            assert not set(a) & set(b)
    merged = [x for step in range(5) for r in range(2) for x in ranks[r][3 * step:3 * step + 3]]
    assert sorted(merged[:10]) == list(range(10)) and sorted(merged[10:20]) == list(range(10))
    assert merged[:10] != merged[10:20]  # a new permutation each epoch
    # resuming at step 2 draws exactly the rest of the straight sequence
    assert list(StepSampler(10, 3, 2, 5, world=2, rank=1, seed=4)) == ranks[1][6:]
    # endless data: global positions themselves
    assert list(StepSampler(4, 2, 1, 3, world=2, rank=1, seed=0, endless=True)) == [6, 7, 10, 11]
