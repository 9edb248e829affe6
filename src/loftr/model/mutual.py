"""Inference-time dual-softmax mutual nearest neighbours in argmax form (fast path, dense similarity).

With ``s`` the scaled similarity (N, L, S), ``r_i`` the log-sum-exp of row i and ``c_j`` that of column j, the
dual-softmax confidence is ``exp(s_ij - r_i) * exp(s_ij - c_j) = exp(2 s_ij - r_i - c_j)``. So row i's best column
is ``argmax_j (2 s_ij - c_j)`` and column j's best row ``argmax_i (2 s_ij - r_i)``: the same mutual nearest
neighbours as the maxima of the confidence, with two exponentials per entry (the two log-sum-exps) instead of three,
and the confidence, with the reference's operations, for the mutual candidates only (which the threshold needs).
The two forms can disagree only where two confidences of a row or column are within float32 rounding of each other
(about 1e-5 relative), i.e. on ties.
"""

from __future__ import annotations

import torch

from .blockwise import SCRATCH_ELEMENTS, _row_blocks, similarity


def dense_mutual(feat0: torch.Tensor, feat1: torch.Tensor, temperature: float, mask0: torch.Tensor | None = None,
                 mask1: torch.Tensor | None = None, rows: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row argmax ``j_all`` (N, L) of the confidence, whether it is mutual (N, L) bool, and its confidence (N, L)
    (exact where mutual, undefined elsewhere), from one (N, L, S) similarity GEMM reduced ``rows`` rows at a time.

    feat0 (N, L, C), feat1 (N, S, C), masks (N, L) / (N, S) 1 = valid; float32 or float64 features."""
    n, l, s = feat0.shape[0], feat0.shape[1], feat1.shape[1]
    rows = rows or max(1, SCRATCH_ELEMENTS // max(n * s, 1))
    sim = similarity(feat0, feat1, temperature, mask0, mask1)
    part_of = sim.new_empty((n, min(rows, l), s))
    col_max, col_sum = sim.amax(1), sim.new_zeros((n, s))
    for blk in _row_blocks(l, rows):
        col_sum.add_(torch.sub(sim[:, blk], col_max[:, None], out=part_of[:, : blk.stop - blk.start]).exp_().sum(1))
    half_c = col_sum.log().add_(col_max).mul_(0.5)  # c_j / 2
    j_all = torch.empty((n, l), dtype=torch.long, device=sim.device)
    row_part, row_best = sim.new_empty((n, l)), sim.new_empty((n, l))  # s_ij - r_i and 2 s_ij - r_i at j_all
    best_in_col = sim.new_full((n, s), -float("inf"))  # max_i of 2 s_ij - r_i
    for blk in _row_blocks(l, rows):
        block, part = sim[:, blk], part_of[:, : blk.stop - blk.start]
        j = torch.sub(block, half_c[:, None], out=part).argmax(2)[:, :, None]  # argmax_j of s_ij - c_j / 2
        j_all[:, blk] = j[:, :, 0]
        torch.log_softmax(block, 2, out=part)
        row_part[:, blk] = torch.gather(part, 2, j)[:, :, 0]
        part.add_(block)
        row_best[:, blk] = torch.gather(part, 2, j)[:, :, 0]
        torch.maximum(best_in_col, part.amax(1), out=best_in_col)
    # the column's maximum is the very float of the row's pick when they are the same cell: no tolerance needed
    mutual = torch.gather(best_in_col, 1, j_all) == row_best
    s_ij = torch.gather(sim, 2, j_all[:, :, None])[:, :, 0]
    col_part = (s_ij - torch.gather(col_max, 1, j_all)).exp_().div_(torch.gather(col_sum, 1, j_all))
    conf = row_part.exp_().mul_(col_part)
    return j_all, mutual, conf


__all__ = ["dense_mutual"]
