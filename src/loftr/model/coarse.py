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
from .blockwise import blockwise_maxima, compute_dtype, dense_maxima
from .mutual import dense_mutual

INF = 1e9
DENSE_LIMIT = 1 << 26  # inference confidences above 64M values (256 MB in float32) are computed blockwise


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
    return select_from_maxima(row_max, j_all, conf.amax(dim=1), thr, valid0, valid1)


def select_from_maxima(row_max: torch.Tensor, j_all: torch.Tensor, col_max: torch.Tensor, thr: float,
                       valid0: torch.Tensor, valid1: torch.Tensor) -> CoarseMatches:
    """:func:`select_matches` from the reductions of the confidence: row max and its column ``j_all`` (N, L), column
    max (N, S). Cell i and j_all[i] match when the row max exceeds ``thr`` and equals column j's max."""
    keep = (row_max > thr) & (torch.gather(col_max, 1, j_all) == row_max) & valid0 & torch.gather(valid1, 1, j_all)
    b_ids, i_ids = torch.where(keep)
    return CoarseMatches(b_ids, i_ids, j_all[b_ids, i_ids], row_max[b_ids, i_ids])


def select_mutual(j_all: torch.Tensor, mutual: torch.Tensor, conf: torch.Tensor, thr: float, valid0: torch.Tensor,
                  valid1: torch.Tensor) -> CoarseMatches:
    """:func:`select_matches` from :func:`~.mutual.dense_mutual`'s row picks ``j_all``, their mutuality and their
    confidence (all (N, L)): cell i and j_all[i] match when mutual, confident above ``thr`` and both valid."""
    keep = mutual & (conf > thr) & valid0 & torch.gather(valid1, 1, j_all)
    b_ids, i_ids = torch.where(keep)
    return CoarseMatches(b_ids, i_ids, j_all[b_ids, i_ids], conf[b_ids, i_ids])


class CoarseMatching(nn.Module):
    """Confidence matrix of two transformed coarse feature sets, and its coarse matches.

    Inference (eval mode, autograd off) with dual-softmax switches by itself to :mod:`.blockwise` when the
    confidence would hold more than ``dense_limit`` values: the same matches, no (N, L, S) matrix (and no
    ``conf_matrix`` in the output). ``fast`` (set by :func:`~loftr.model.optimize.optimize_for_inference`) also runs
    the smaller problems without a confidence matrix: one similarity GEMM reduced row block by row block, with the
    mutual check in argmax form (:func:`~.mutual.dense_mutual`), so ``conf_matrix`` is None there too. Optimal
    transport (sinkhorn) always stays dense: its Sinkhorn iterations alternate full row and column normalisations of
    the whole coupling matrix.
    """

    def __init__(self, config: CoarseMatchingConfig, dense_limit: int = DENSE_LIMIT) -> None:
        super().__init__()
        self.config = config
        self.fast = False
        self.dense_limit = dense_limit
        self.block_rows: int | None = None
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
        return self._confidence(feat0, feat1, mask0, mask1)[0]

    def _confidence(self, feat0: torch.Tensor, feat1: torch.Tensor, mask0: torch.Tensor | None,
                    mask1: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The confidence and, for optimal transport, the whole (N, L+1, S+1) assignment with its dustbin row and
        column (None for dual-softmax): what the sparse optimal-transport loss supervises."""
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
        assign = None
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
        return conf, assign

    def forward(
        self,
        feat0: torch.Tensor,
        feat1: torch.Tensor,
        hw0: tuple[int, int],
        hw1: tuple[int, int],
        mask0: torch.Tensor | None = None,
        mask1: torch.Tensor | None = None,
        thr: float | None = None,
    ) -> tuple[torch.Tensor | None, CoarseMatches]:
        """Confidence (N, L, S) and its matches. ``hw0``/``hw1``: coarse map sizes; masks (N, H, W) of valid cells.

        The confidence is None when the blockwise path ran (see the class docstring)."""
        conf, _, matches = self.forward_with_bin(feat0, feat1, hw0, hw1, mask0, mask1, thr)
        return conf, matches

    def forward_with_bin(
        self,
        feat0: torch.Tensor,
        feat1: torch.Tensor,
        hw0: tuple[int, int],
        hw1: tuple[int, int],
        mask0: torch.Tensor | None = None,
        mask1: torch.Tensor | None = None,
        thr: float | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, CoarseMatches]:
        """:meth:`forward` plus, for optimal transport, the (N, L+1, S+1) assignment with dustbins (else None)."""
        flat0 = mask0.flatten(1) if mask0 is not None else None
        flat1 = mask1.flatten(1) if mask1 is not None else None
        n, l, s = feat0.shape[0], feat0.shape[1], feat1.shape[1]
        inference = not self.training and not torch.is_grad_enabled() and self.config.match_type == "dual_softmax"
        blockwise = inference and n * l * s > self.dense_limit
        mutual = None
        if inference and self.fast and not blockwise:  # argmax form of the mutual check (see .mutual)
            conf, assign, maxima, mutual = None, None, None, self._inference_mutual(feat0, feat1, flat0, flat1)
        elif blockwise or (inference and self.fast):
            conf, assign, maxima = None, None, self._inference_maxima(feat0, feat1, flat0, flat1, blockwise)
        else:
            conf, assign = self._confidence(feat0, feat1, flat0, flat1)
            maxima = None
        border = self.config.border_rm
        thr = self.config.thr if thr is None else thr
        with torch.no_grad():
            valid0 = valid_cells(hw0, border, mask0, n, feat0.device)
            valid1 = valid_cells(hw1, border, mask1, n, feat0.device)
            if mutual is not None:
                matches = select_mutual(*mutual, thr, valid0, valid1)
            elif maxima is None:
                matches = select_matches(conf.detach(), thr, valid0, valid1)
            else:
                matches = select_from_maxima(*maxima, thr, valid0, valid1)
        return conf, assign, matches

    def _inference_maxima(self, feat0: torch.Tensor, feat1: torch.Tensor, mask0: torch.Tensor | None,
                          mask1: torch.Tensor | None, blockwise: bool
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Row max, its column and column max of the dual-softmax confidence at inference, in at least float32 (also
        under autocast), without a confidence matrix: from one similarity GEMM reduced in row blocks, or blockwise
        (two GEMMs, no (N, L, S) matrix)."""
        dtype = compute_dtype(feat0.dtype)
        temperature = self.config.dsmax_temperature
        with torch.autocast(feat0.device.type, enabled=False):
            f0, f1 = feat0.to(dtype), feat1.to(dtype)
            if blockwise:
                return blockwise_maxima(f0, f1, temperature, mask0, mask1, self.block_rows)
            return dense_maxima(f0, f1, temperature, mask0, mask1)

    def _inference_mutual(self, feat0: torch.Tensor, feat1: torch.Tensor, mask0: torch.Tensor | None,
                          mask1: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:func:`~.mutual.dense_mutual` in at least float32 (also under autocast): row picks, mutual, confidence."""
        dtype = compute_dtype(feat0.dtype)
        with torch.autocast(feat0.device.type, enabled=False):
            return dense_mutual(feat0.to(dtype), feat1.to(dtype), self.config.dsmax_temperature, mask0, mask1)
