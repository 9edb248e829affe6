"""The training objective of a batch: ground truth from the batch's mapping (homography or depth + pose), the
model run with that supervision, and the official loss terms."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..model import LoFTR
from .data import PairSample
from .datasets import DepthPairSample
from .losses import coarse_focal_loss, coarse_focal_loss_with_bins, fine_epipolar_loss, fine_l2_std_loss
from .posed import PosedPairSample
from .supervision import (FAR, CoarseSupervision, coarse_cells, coarse_supervision, depth_coarse_supervision,
                          fine_targets, grid_points, match_coarse_supervision, posed_coarse_supervision)
from .teacher import MatchPairSample

Batch = PairSample | DepthPairSample | MatchPairSample | PosedPairSample


def supervise(batch: Batch, hw0: tuple[int, int], hw1: tuple[int, int], stride: int,
              depth_check: bool = True) -> CoarseSupervision:
    """Coarse ground truth of a batch: from its homography, its depth, intrinsics and poses, its sparse matches, or
    its tracks and epipolar geometry."""
    if isinstance(batch, PosedPairSample):
        sup = posed_coarse_supervision(batch.kpts0, batch.kpts1, batch.valid, batch.F_0to1, hw0, hw1, stride)
        if not batch.fine:
            sup = dataclasses.replace(sup, w_pt0_i=torch.full_like(sup.w_pt0_i, FAR), F_0to1=None)
        return sup
    if isinstance(batch, DepthPairSample):
        sup = depth_coarse_supervision(batch.depth0, batch.depth1, batch.K0, batch.K1, batch.T_0to1, hw0, hw1,
                                       stride, batch.scale0, batch.scale1, batch.mask0, batch.mask1,
                                       depth_check=depth_check)
        if not batch.fine:  # coarse-only pairs: every fine target unknown, as for a teacher's matches
            sup = dataclasses.replace(sup, w_pt0_i=torch.full_like(sup.w_pt0_i, FAR))
        return sup
    if isinstance(batch, MatchPairSample):
        return match_coarse_supervision(batch.kpts0, batch.kpts1, batch.valid, hw0, hw1, stride)
    return coarse_supervision(batch.H_0to1, hw0, hw1, stride, batch.valid1)


def loss_terms(model: LoFTR, batch: Batch, *, sparse: bool = False,
               depth_check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of a batch and a (5,) tensor of what to log: loss, coarse loss, fine loss, ground-truth matches, predicted
    matches (those above the threshold; the rest of the fine stage's selections are ground-truth pads)."""
    cfg = model.config
    stride_c, stride_f = cfg.resolution
    mask0, mask1 = getattr(batch, "mask0", None), getattr(batch, "mask1", None)
    hw0 = (batch.image0.shape[2] // stride_c, batch.image0.shape[3] // stride_c)
    hw1 = (batch.image1.shape[2] // stride_c, batch.image1.shape[3] // stride_c)
    sup = supervise(batch, hw0, hw1, stride_c, depth_check)
    pads = sup
    if sup.b_ids.numel() == 0:  # no ground truth: one stand-in keeps the fine stage (and DDP's gradients) running
        zero = torch.zeros(1, dtype=torch.long, device=sup.b_ids.device)
        pads = dataclasses.replace(sup, b_ids=zero, i_ids=zero, j_ids=zero)
    out = model.run(batch.image0, batch.image1, mask0, mask1, supervision=pads)
    if (out.hw0_c, out.hw1_c) != (hw0, hw1):
        raise ValueError(f"training images must have sides that are multiples of {stride_c} pixels, got "
                         f"{tuple(batch.image0.shape[2:])} and {tuple(batch.image1.shape[2:])}")
    weight = None
    if mask0 is not None or mask1 is not None:
        n = batch.image0.shape[0]
        m0 = coarse_cells(mask0, hw0, stride_c) if mask0 is not None else torch.ones(n, hw0[0] * hw0[1], dtype=torch.bool)
        m1 = coarse_cells(mask1, hw1, stride_c) if mask1 is not None else torch.ones(n, hw1[0] * hw1[1], dtype=torch.bool)
        weight = (m0.to(sup.conf_gt.device)[:, :, None] & m1.to(sup.conf_gt.device)[:, None, :]).float()
    if sparse and cfg.match_coarse.match_type == "sinkhorn":
        loss_c = coarse_focal_loss_with_bins(out.conf_matrix_with_bin, sup.conf_gt, weight=weight)
    else:
        loss_c = coarse_focal_loss(out.conf_matrix, sup.conf_gt, weight=weight, sparse=sparse)
    sel = out.coarse
    target = fine_targets(sup, sel.b_ids, sel.i_ids, sel.j_ids, stride_f, cfg.fine_window_size)
    loss_f = fine_l2_std_loss(out.expec_f, target.to(out.expec_f.device))
    if sup.F_0to1 is not None:  # posed pairs: the epipolar line where the true positive has no exact target
        loss_f = loss_f + _epipolar_term(out.expec_f, sup, sel.b_ids, sel.i_ids, sel.j_ids, target, hw0, hw1,
                                         stride_c, stride_f * (cfg.fine_window_size // 2))
    loss = loss_c + loss_f
    logs = torch.stack([loss.detach().float(), loss_c.detach().float(), loss_f.detach().float(),
                        torch.tensor(float(sup.b_ids.numel()), device=loss.device),
                        (sel.mconf > 0).sum().float()])
    return loss, logs


def _epipolar_term(expec_f: torch.Tensor, sup: CoarseSupervision, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
                   target: torch.Tensor, hw0: tuple[int, int], hw1: tuple[int, int], stride: int,
                   radius: float) -> torch.Tensor:
    """The epipolar fine loss of the selections (b, i, j) that are ground-truth matches without an exact target."""
    device = sup.conf_gt.device
    b, i, j = b.to(device), i.to(device), j.to(device)
    use = (sup.conf_gt[b, i, j] == 1) & (target.to(device).abs().max(-1).values >= 1)
    pts0 = grid_points(hw0, stride, 1, device)[0, i]
    pts1 = grid_points(hw1, stride, 1, device)[0, j]
    return fine_epipolar_loss(expec_f, pts0, pts1, sup.F_0to1[b], radius, use.to(expec_f.device))


def log_values(logs: torch.Tensor) -> dict[str, float]:
    loss, loss_c, loss_f, gt, pred = logs.tolist()
    return {"loss": loss, "loss_c": loss_c, "loss_f": loss_f, "gt": int(round(gt)), "pred": int(round(pred))}


def batch_loss(model: LoFTR, batch: Batch, *, sparse: bool = False,
               depth_check: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """Coarse focal + fine L2-std loss of a batch (homographic or with depth), and scalar logs."""
    loss, logs = loss_terms(model, batch, sparse=sparse, depth_check=depth_check)
    return loss, log_values(logs)


def training_loss(model: LoFTR, image0: torch.Tensor, image1: torch.Tensor, H: torch.Tensor,
                  valid1: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Coarse focal + fine L2-std loss of a batch of homographic pairs, and scalar logs."""
    return batch_loss(model, PairSample(image0, image1, H, valid1))


class LossModule(nn.Module):
    """The model with its loss as ``forward``: what DistributedDataParallel wraps (it hooks ``forward`` only)."""

    def __init__(self, model: LoFTR, sparse: bool, depth_check: bool) -> None:
        super().__init__()
        self.model, self.sparse, self.depth_check = model, sparse, depth_check

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return loss_terms(self.model, batch, sparse=self.sparse, depth_check=self.depth_check)
