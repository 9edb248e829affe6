"""Validation during training: matches per pair and precision at 1/3 px against the true mapping."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..model import LoFTR
from .data import collate, to_device
from .datasets import DepthPairSample
from .objective import Batch
from .supervision import warp, warp_depth


def true_positions(batch: Batch, keypoints0: torch.Tensor,
                   batch_indexes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where matched points of image0 truly are in image1 (network pixels, float64), and which have ground truth."""
    if isinstance(batch, DepthPairSample):
        out = torch.zeros(keypoints0.shape, dtype=torch.float64, device=keypoints0.device)
        ok = torch.zeros(keypoints0.shape[0], dtype=torch.bool, device=keypoints0.device)
        for b in batch_indexes.unique().tolist():
            sel = batch_indexes == b
            pts = keypoints0[sel].double() * batch.scale0[b].double()
            s = slice(b, b + 1)
            valid, warped = warp_depth(pts[None], batch.depth0[s], batch.depth1[s], batch.T_0to1[s], batch.K0[s],
                                       batch.K1[s])
            out[sel] = warped[0] / batch.scale1[b].double()
            ok[sel] = valid[0]
        return out, ok
    proj = warp(keypoints0[:, None].double(), batch.H_0to1[batch_indexes].double())[:, 0]
    return proj, torch.ones(keypoints0.shape[0], dtype=torch.bool, device=keypoints0.device)


@torch.no_grad()
def validate(model: LoFTR, pairs: Dataset, batch_size: int, device: torch.device | None = None) -> dict[str, float]:
    """Matches per pair and precision at 1/3 px against the true mapping (homography, or depth and pose: then over
    the matches with ground truth, whose share is ``with_ground_truth``) on fixed pairs."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    collate_fn = getattr(pairs, "collate", collate)
    total = with_gt = good1 = good3 = 0
    depth = False
    for start in range(0, len(pairs), batch_size):
        batch = to_device(collate_fn([pairs[k] for k in range(start, min(start + batch_size, len(pairs)))]), device)
        depth = isinstance(batch, DepthPairSample)
        m = model.match(batch.image0, batch.image1, getattr(batch, "mask0", None), getattr(batch, "mask1", None))
        if len(m):
            gt, ok = true_positions(batch, m.keypoints0, m.batch_indexes)
            err = (gt - m.keypoints1.double()).norm(dim=-1)
            good1 += int(((err < 1) & ok).sum())
            good3 += int(((err < 3) & ok).sum())
            with_gt += int(ok.sum())
        total += len(m)
    model.train(was_training)
    n = max(len(pairs), 1)
    metrics = {"matches_per_pair": total / n, "precision@1px": good1 / max(with_gt, 1),
               "precision@3px": good3 / max(with_gt, 1)}
    if depth:
        metrics["with_ground_truth"] = with_gt / max(total, 1)
    return metrics
