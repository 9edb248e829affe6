"""The official losses: focal (dense, sparse, optimal transport with dustbins) and the std-weighted fine L2."""

from __future__ import annotations

import math

import torch

from loftr.config import get_preset, with_overrides
from loftr.model import LoFTR
from loftr.train.losses import coarse_focal_loss, coarse_focal_loss_with_bins, fine_l2_std_loss
from loftr.train.supervision import coarse_supervision


def _fp(p: float) -> float:  # focal loss of a positive
    return -0.25 * (1 - p) ** 2 * math.log(p)


def _fn(p: float) -> float:  # focal loss of a negative
    return -0.25 * p ** 2 * math.log(1 - p)


def test_dense_and_sparse_focal_loss_by_hand() -> None:
    conf = torch.tensor([[[0.7, 0.1], [0.2, 0.4]]])
    gt = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    dense = coarse_focal_loss(conf, gt)
    assert math.isclose(dense.item(), _fp(0.7) + (_fn(0.1) + _fn(0.2) + _fn(0.4)) / 3, rel_tol=1e-5)
    assert math.isclose(coarse_focal_loss(conf, gt, sparse=True).item(), _fp(0.7), rel_tol=1e-5)
    # sparse dual-softmax supervision ignores the negatives; dense does not
    other = conf.clone()
    other[0, 1, 1] = 0.9
    assert coarse_focal_loss(other, gt, sparse=True) == coarse_focal_loss(conf, gt, sparse=True)
    assert coarse_focal_loss(other, gt) > dense
    # padded cells (weight 0) add nothing but still count in the means, as in the reference
    weight = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    assert math.isclose(coarse_focal_loss(conf, gt, weight=weight).item(), _fp(0.7) + _fn(0.1) / 3, rel_tol=1e-5)


def test_focal_loss_without_ground_truth_is_zero_but_differentiable() -> None:
    conf = torch.full((1, 3, 3), 0.2, requires_grad=True)
    sparse = coarse_focal_loss(conf, torch.zeros(1, 3, 3), sparse=True)
    assert sparse.item() == 0.0 and sparse.requires_grad
    loss = coarse_focal_loss(conf, torch.zeros(1, 3, 3))
    loss.backward()
    assert math.isclose(loss.item(), _fn(0.2), rel_tol=1e-5) and conf.grad is not None
    # optimal transport with every cell matched: nothing goes to the dustbins
    with_bin = torch.full((1, 4, 4), 0.2, requires_grad=True)
    loss = coarse_focal_loss_with_bins(with_bin, torch.eye(3)[None])
    loss.backward()
    assert math.isclose(loss.item(), _fp(0.2), rel_tol=1e-5)
    assert torch.equal(with_bin.grad[0, :3, :3] != 0, torch.eye(3, dtype=torch.bool))
    assert (with_bin.grad[0, 3] == 0).all() and (with_bin.grad[0, :, 3] == 0).all()


def test_optimal_transport_loss_supervises_dustbins_of_unmatched_cells() -> None:
    conf = torch.tensor([[[0.6, 0.1, 0.3], [0.1, 0.2, 0.7], [0.3, 0.5, 0.2]]], requires_grad=True)
    gt = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # cell 0 ↔ 0 matched; row 1 and column 1 go to the dustbins
    loss = coarse_focal_loss_with_bins(conf, gt)
    assert math.isclose(loss.item(), _fp(0.6) + (_fp(0.7) + _fp(0.5)) / 2, rel_tol=1e-5)
    loss.backward()
    touched = conf.grad != 0
    assert touched[0, 0, 0] and touched[0, 1, 2] and touched[0, 2, 1] and touched.sum() == 3
    # a padded row (all weights 0) loses its dustbin term
    weight = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    padded = coarse_focal_loss_with_bins(conf.detach(), gt, weight=weight)
    assert math.isclose(padded.item(), _fp(0.6) + _fp(0.5), rel_tol=1e-5)


def test_fine_loss_is_weighted_by_the_inverse_std() -> None:
    target = torch.tensor([[0.5, -0.5], [0.0, 0.2], [1.5, 0.0]])  # the last is outside the window: ignored
    pred = torch.tensor([[0.4, -0.5, 0.1], [0.0, 0.0, 0.4], [0.0, 0.0, 0.2]], requires_grad=True)
    inv = torch.tensor([10.0, 2.5, 5.0])
    w = inv / inv.mean()
    expected = (w[0] * 0.01 + w[1] * 0.04) / 2
    loss = fine_l2_std_loss(pred, target)
    assert math.isclose(loss.item(), expected.item(), rel_tol=1e-5)
    loss.backward()
    assert (pred.grad[:, 2] == 0).all()  # the std is not trained to shrink the loss
    assert fine_l2_std_loss(pred, torch.full((3, 2), 2.0)).item() == 0.0


def test_model_keeps_the_dustbin_matrix_for_the_sparse_optimal_transport_loss() -> None:
    cfg = with_overrides(get_preset("tiny_ds"), match_type="sinkhorn", train_pad_num_gt_min=4)
    torch.manual_seed(0)
    model = LoFTR(config=cfg).train()
    img = torch.rand(1, 1, 64, 64)
    H = torch.eye(3, dtype=torch.float64)[None]
    H[0, 0, 2] = 8.0
    sup = coarse_supervision(H, (8, 8), (8, 8), 8)
    out = model.run(img, torch.roll(img, 8, dims=3), supervision=sup)
    assert out.conf_matrix_with_bin.shape == (1, 65, 65)
    torch.testing.assert_close(out.conf_matrix_with_bin[:, :-1, :-1], out.conf_matrix)
    coarse_focal_loss_with_bins(out.conf_matrix_with_bin, sup.conf_gt).backward()
    assert model.coarse_matching.bin_score.grad is not None and model.coarse_matching.bin_score.grad != 0
    model.eval()
    with torch.no_grad():
        assert model.run(img, img).conf_matrix_with_bin is None
