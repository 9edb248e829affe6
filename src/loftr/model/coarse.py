"""Coarse matching: confidence matrix (dual-softmax or optimal transport) and the selection of coarse matches.

Selection = confidence above a threshold AND mutual nearest neighbour AND both cells at least ``border_rm`` cells
inside the valid (unpadded) part of their map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import CoarseMatchingConfig

INF = 1e9


def _masked_value(dtype: torch.dtype) -> float:
    """-INF, or the lowest finite value of a dtype that cannot hold it (float16)."""
    return -min(INF, torch.finfo(dtype).max)


def dual_softmax(sim: torch.Tensor) -> torch.Tensor:
    """softmax over rows times softmax over columns of an (N, L, S) similarity."""
    return F.softmax(sim, 1) * F.softmax(sim, 2)


def log_optimal_transport(scores: torch.Tensor, bin_score: torch.Tensor, iters: int) -> torch.Tensor:
    """Entropic optimal transport with a dustbin row and column, in log space (SuperGlue, Sarlin et al. 2020).

    scores (N, L, S) → log assignment (N, L+1, S+1). The marginals give every cell mass 1/(L+S) and the dustbins
    the mass of the other side; ``iters`` Sinkhorn iterations alternate the row and column normalisations.
    """
    n, m, s = scores.shape
    one = scores.new_tensor(1)
    ms, ns = (m * one).to(scores), (s * one).to(scores)
    alpha = bin_score.to(scores)
    couplings = torch.cat(
        [torch.cat([scores, alpha.expand(n, m, 1)], -1), torch.cat([alpha.expand(n, 1, s), alpha.expand(n, 1, 1)], -1)],
        1,
    )
    norm = -(ms + ns).log()
    log_mu = torch.cat([norm.expand(m), ns.log()[None] + norm])[None].expand(n, -1)
    log_nu = torch.cat([norm.expand(s), ms.log()[None] + norm])[None].expand(n, -1)
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(couplings + v.unsqueeze(1), dim=2)
        v = log_nu - torch.logsumexp(couplings + u.unsqueeze(2), dim=1)
    return couplings + u.unsqueeze(2) + v.unsqueeze(1) - norm


def valid_cells(hw: tuple[int, int], border: int, mask: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    """(N, H*W) bool: cells at least ``border`` cells inside the valid extent of each map.

    ``mask`` (N, H, W) marks valid cells of padded inputs; the valid extent is its number of valid rows and columns
    (padding sits at the bottom/right), which is how the reference removes borders of padded images.
    """
    h, w = hw
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    if mask is None:
        h_end = torch.full((n, 1, 1), h, device=device)
        w_end = torch.full((n, 1, 1), w, device=device)
    else:
        m = mask.bool()
        h_end = m.sum(1).max(-1).values.view(n, 1, 1)
        w_end = m.sum(2).max(-1).values.view(n, 1, 1)
    keep = torch.ones((n, h, w), dtype=torch.bool, device=device)
    if border > 0:
        keep = (rows >= border) & (cols >= border) & (rows < h_end - border) & (cols < w_end - border)
        keep = keep.expand(n, h, w)
    if mask is not None:
        keep = keep & mask.bool()
    return keep.reshape(n, h * w)


@dataclass(frozen=True)
class CoarseMatches:
    """Selected coarse matches: pair b, cell i of image0, cell j of image1, confidence (all (M,))."""

    b_ids: torch.Tensor
    i_ids: torch.Tensor
    j_ids: torch.Tensor
    mconf: torch.Tensor


def select_matches(
    conf: torch.Tensor, thr: float, valid0: torch.Tensor, valid1: torch.Tensor
) -> CoarseMatches:
    """Matches of an (N, L, S) confidence: row max > thr, equal to its column max, both cells valid.

    ``valid0`` (N, L) / ``valid1`` (N, S) come from :func:`valid_cells`. Works without any (N, L, S) boolean mask.
    """
    row_max, j_all = conf.max(dim=2)
    col_max = conf.amax(dim=1)
    keep = (row_max > thr) & (torch.gather(col_max, 1, j_all) == row_max) & valid0 & torch.gather(valid1, 1, j_all)
    b_ids, i_ids = torch.where(keep)
    return CoarseMatches(b_ids, i_ids, j_all[b_ids, i_ids], row_max[b_ids, i_ids])


class CoarseMatching(nn.Module):
    """Confidence matrix of two transformed coarse feature sets, and its coarse matches."""

    def __init__(self, config: CoarseMatchingConfig) -> None:
        super().__init__()
        self.config = config
        if config.match_type == "sinkhorn":
            self.bin_score = nn.Parameter(torch.tensor(float(config.skh_init_bin_score)))

    def confidence(
        self,
        feat0: torch.Tensor,
        feat1: torch.Tensor,
        mask0: torch.Tensor | None = None,
        mask1: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """feat0 (N, L, C), feat1 (N, S, C), masks (N, L)/(N, S) 1 = valid → confidence (N, L, S), differentiable."""
        cfg = self.config
        c = feat0.shape[-1]
        feat0, feat1 = feat0 / c**0.5, feat1 / c**0.5
        sim = torch.einsum("nlc,nsc->nls", feat0, feat1)
        invalid = None
        if mask0 is not None or mask1 is not None:
            n, l, s = sim.shape
            m0 = mask0.bool() if mask0 is not None else sim.new_ones((n, l), dtype=torch.bool)
            m1 = mask1.bool() if mask1 is not None else sim.new_ones((n, s), dtype=torch.bool)
            invalid = ~(m0[:, :, None] & m1[:, None, :])
        if cfg.match_type == "dual_softmax":
            sim = sim / cfg.dsmax_temperature
            if invalid is not None:
                sim = sim.masked_fill(invalid, _masked_value(sim.dtype))
            conf = dual_softmax(sim)
        else:
            if invalid is not None:
                sim = sim.masked_fill(invalid, _masked_value(sim.dtype))
            assign = log_optimal_transport(sim, self.bin_score, cfg.skh_iters).exp()
            conf = assign[:, :-1, :-1]
            if not self.training and cfg.skh_prefilter:
                l, s = conf.shape[1:]
                to_bin0 = (assign.max(dim=2).indices == s)[:, :-1]  # (N, L): row's best is the dustbin
                to_bin1 = (assign.max(dim=1).indices == l)[:, :-1]  # (N, S)
                conf = conf.masked_fill(to_bin0[:, :, None] | to_bin1[:, None, :], 0.0)
        if invalid is not None:
            conf = conf.masked_fill(invalid, 0.0)
        return conf

    def forward(
        self,
        feat0: torch.Tensor,
        feat1: torch.Tensor,
        hw0: tuple[int, int],
        hw1: tuple[int, int],
        mask0: torch.Tensor | None = None,
        mask1: torch.Tensor | None = None,
        thr: float | None = None,
    ) -> tuple[torch.Tensor, CoarseMatches]:
        """Confidence (N, L, S) and its matches. ``hw0``/``hw1``: coarse map sizes; masks (N, H, W) of valid cells."""
        flat0 = mask0.flatten(1) if mask0 is not None else None
        flat1 = mask1.flatten(1) if mask1 is not None else None
        conf = self.confidence(feat0, feat1, flat0, flat1)
        n = conf.shape[0]
        border = self.config.border_rm
        with torch.no_grad():
            valid0 = valid_cells(hw0, border, mask0, n, conf.device)
            valid1 = valid_cells(hw1, border, mask1, n, conf.device)
            matches = select_matches(conf.detach(), self.config.thr if thr is None else thr, valid0, valid1)
        return conf, matches
