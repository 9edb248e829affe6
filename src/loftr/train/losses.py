"""The official LoFTR losses: focal loss on the coarse confidence, std-weighted L2 on the fine expectation."""

from __future__ import annotations

import torch


def coarse_focal_loss(conf: torch.Tensor, conf_gt: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0,
                      pos_weight: float = 1.0, neg_weight: float = 1.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """conf, conf_gt (N, L, S); weight (N, L, S) optional (0 for padded cells). Mean over positives + negatives."""
    pos, neg = conf_gt == 1, conf_gt == 0
    conf = conf.clamp(1e-6, 1 - 1e-6)
    w = weight if weight is not None else torch.ones_like(conf)
    if not pos.any():  # keep the graph connected; contributes nothing
        pos = pos.clone()
        pos[0, 0, 0] = True
        w = w.clone()
        w[0, 0, 0] = 0.0
        pos_weight = 0.0
    loss_pos = -alpha * (1 - conf[pos]) ** gamma * conf[pos].log() * w[pos]
    loss_neg = -alpha * conf[neg] ** gamma * (1 - conf[neg]).log() * w[neg]
    return pos_weight * loss_pos.mean() + neg_weight * loss_neg.mean()


def fine_l2_std_loss(expec_f: torch.Tensor, expec_f_gt: torch.Tensor, correct_thr: float = 1.0) -> torch.Tensor:
    """expec_f (M, 3) predicted (x, y, std), expec_f_gt (M, 2). Targets outside the window are ignored; each term is
    weighted by the (normalised, detached) inverse std."""
    correct = expec_f_gt.abs().max(-1).values < correct_thr
    if not correct.any():
        return expec_f.sum() * 0.0
    inv_std = 1.0 / expec_f[:, 2].clamp(min=1e-10)
    w = (inv_std / inv_std.mean()).detach()
    l2 = ((expec_f_gt[correct] - expec_f[correct, :2]) ** 2).sum(-1)
    return (l2 * w[correct]).mean()
