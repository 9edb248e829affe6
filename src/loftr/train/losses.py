"""The official LoFTR losses: focal loss on the coarse confidence, std-weighted L2 on the fine expectation.

Coarse, dense supervision (``sparse=False``): focal loss on every entry of the (N, L, S) confidence, positives
(ground-truth matches) and negatives (all other entries) averaged separately. Sparse supervision (the reference's
``SPARSE_SPVS``): with dual-softmax only the positives are supervised; with optimal transport the positives of the
inner matrix plus, as negatives, the dustbin entries of every row and column without a ground-truth match
(:func:`coarse_focal_loss_with_bins`). Padded cells are left out through ``weight``. Fine: L2 between the predicted
and true sub-pixel offsets of the coarse selections whose true offset lies inside the window (|offset| < 1),
weighted by the normalised inverse of the predicted standard deviation (detached). Where only the epipolar geometry
is known (posed pairs without an exact target), :func:`fine_epipolar_loss`: the squared distance of the refined
point to the epipolar line, weighted the same way.
"""

from __future__ import annotations

import torch

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
FINE_CORRECT_THR = 1.0
EPS = 1e-6


def _focal_pos(p: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Focal loss of probabilities ``p`` that should be 1."""
    return -alpha * (1 - p) ** gamma * p.log()


def _focal_neg(p: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Focal loss of probabilities ``p`` that should be 0."""
    return -alpha * p ** gamma * (1 - p).log()


def coarse_focal_loss(conf: torch.Tensor, conf_gt: torch.Tensor, alpha: float = FOCAL_ALPHA,
                      gamma: float = FOCAL_GAMMA, pos_weight: float = 1.0, neg_weight: float = 1.0,
                      weight: torch.Tensor | None = None, sparse: bool = False) -> torch.Tensor:
    """conf, conf_gt (N, L, S); weight (N, L, S) optional (0 for padded cells). Dense: mean over positives + mean
    over negatives; ``sparse``: positives only (dual-softmax has no dustbin to put the unmatched cells in).
    ``conf_gt`` is 1 (match), 0 (no match) or -1 (unknown: in neither term, e.g. cells a teacher did not match)."""
    pos, neg = conf_gt == 1, conf_gt == 0
    conf = conf.clamp(EPS, 1 - EPS)
    w = weight if weight is not None else torch.ones_like(conf)
    loss = _mean_or_zero(_focal_pos(conf[pos], alpha, gamma) * w[pos], conf) * pos_weight
    if sparse:
        return loss
    return loss + _mean_or_zero(_focal_neg(conf[neg], alpha, gamma) * w[neg], conf) * neg_weight


def _mean_or_zero(terms: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """The mean of ``terms``; with none (no ground truth at all, say) a zero still connected to ``anchor``'s graph,
    so every parameter gets a gradient, as distributed training needs (the reference's zero-weighted stand-in)."""
    return terms.mean() if terms.numel() else anchor.sum() * 0.0


def coarse_focal_loss_with_bins(conf_with_bin: torch.Tensor, conf_gt: torch.Tensor, alpha: float = FOCAL_ALPHA,
                                gamma: float = FOCAL_GAMMA, pos_weight: float = 1.0, neg_weight: float = 1.0,
                                weight: torch.Tensor | None = None) -> torch.Tensor:
    """Sparse supervision of optimal transport: conf_with_bin (N, L+1, S+1) the assignment with dustbins, conf_gt
    (N, L, S), weight (N, L, S) optional. Positives: the ground-truth entries of the inner matrix. Negatives: the
    dustbin entry of each row (cell of image0) and of each column (cell of image1) that has no ground-truth match
    — they should go to the dustbin, so their dustbin probability is pushed to 1; rows/columns whose weights are
    all 0 (padding) are left out, and so are rows/columns with unknown entries (``conf_gt`` -1: a teacher's sparse
    matches say nothing about the cells they miss)."""
    n, l, s = conf_gt.shape
    if conf_with_bin.shape != (n, l + 1, s + 1):
        raise ValueError(f"conf_with_bin {tuple(conf_with_bin.shape)} does not fit conf_gt {tuple(conf_gt.shape)} "
                         "with a dustbin row and column")
    conf = conf_with_bin.clamp(EPS, 1 - EPS)
    pos = conf_gt == 1
    w = weight if weight is not None else torch.ones_like(conf_gt)
    loss_pos = _focal_pos(conf[:, :-1, :-1][pos], alpha, gamma) * w[pos]
    unmatched0 = (conf_gt == 0).all(-1)  # (N, L)
    unmatched1 = (conf_gt == 0).all(1)  # (N, S)
    if weight is not None:
        unmatched0 = unmatched0 & (weight.sum(-1) != 0)
        unmatched1 = unmatched1 & (weight.sum(1) != 0)
    to_bin = torch.cat([conf[:, :-1, -1][unmatched0], conf[:, -1, :-1][unmatched1]])
    loss_neg = _focal_pos(to_bin, alpha, gamma)
    return _mean_or_zero(loss_pos, conf) * pos_weight + _mean_or_zero(loss_neg, conf) * neg_weight


def fine_l2_std_loss(expec_f: torch.Tensor, expec_f_gt: torch.Tensor,
                     correct_thr: float = FINE_CORRECT_THR) -> torch.Tensor:
    """expec_f (M, 3) predicted (x, y, std), expec_f_gt (M, 2). Targets outside the window are ignored; each term is
    weighted by the (normalised, detached) inverse std."""
    correct = expec_f_gt.abs().max(-1).values < correct_thr
    if not correct.any():
        return expec_f.sum() * 0.0
    inv_std = 1.0 / expec_f[:, 2].clamp(min=1e-10)
    w = (inv_std / inv_std.mean()).detach()
    l2 = ((expec_f_gt[correct] - expec_f[correct, :2]) ** 2).sum(-1)
    return (l2 * w[correct]).mean()


def fine_epipolar_loss(expec_f: torch.Tensor, pts0: torch.Tensor, pts1: torch.Tensor, F: torch.Tensor,
                       radius: float, use: torch.Tensor) -> torch.Tensor:
    """expec_f (M, 3) predicted (x, y, std) in window units; pts0 (M, 2) the selected cell centres of image0 and
    pts1 (M, 2) those of image1 (network pixels); F (M, 3, 3) with p1^T F p0 = 0; ``radius`` the window radius in
    pixels; ``use`` (M,) bool the selections to supervise. Mean of the squared distances (window units) of the
    refined points pts1 + expec_f * radius to the epipolar lines of pts0, weighted by the normalised inverse std."""
    if not use.any():
        return expec_f.sum() * 0.0
    inv_std = 1.0 / expec_f[:, 2].clamp(min=1e-10)
    w = (inv_std / inv_std.mean()).detach()
    p0, F = pts0[use].to(torch.float64), F[use].to(torch.float64)
    line = torch.cat([p0, torch.ones_like(p0[:, :1])], -1)[:, None] @ F.transpose(1, 2)
    line = (line[:, 0] / line[:, 0, :2].norm(dim=-1, keepdim=True).clamp(min=1e-12)).to(expec_f.dtype)
    p1 = pts1[use].to(expec_f) + expec_f[use, :2] * radius
    d = ((line[:, :2] * p1).sum(-1) + line[:, 2]) / radius
    return (d ** 2 * w[use]).mean()
