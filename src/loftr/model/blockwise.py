"""Inference-time dual-softmax coarse matching without a confidence matrix: dense (one similarity GEMM) or blockwise
(no (N, L, S) matrix at all).

With ``sim`` the scaled similarity of the two token sets, the confidence is
``conf[i, j] = softmax_j(sim)[i, j] * softmax_i(sim)[i, j]`` and a coarse match needs only three reductions of it:
each row's max and argmax and each column's max. Both paths work on row blocks of ``sim``:

1. the column normalisers: each column's max and sum of ``exp(sim - max)`` (the blockwise path accumulates them over
   the blocks with the usual online rescaling of a streaming softmax);
2. each block's exact confidence rows (the row softmax is complete inside a block), reduced to the row max/argmax
   and folded into a running column max.

Every confidence value is formed once, by the reference's operations, so a row's maximum and the maximum of the
column it picks are the very same float when they are the same cell: the mutual check needs no tolerance. The dense
path keeps the similarity (one GEMM) and reduces it in cache-sized row blocks, so no second (N, L, S) matrix is ever
allocated; the blockwise path holds a few (N, rows, S) blocks at a time and pays a second similarity GEMM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

INF = 1e9
BLOCK_ELEMENTS = 1 << 22  # blockwise path: about 4M similarity values (16 MB in float32) per block
SCRATCH_ELEMENTS = 1 << 20  # dense path: rows reduced at a time, about 1M values (4 MB in float32, cache-sized)


def _masked_value(dtype: torch.dtype) -> float:
    return -min(INF, torch.finfo(dtype).max)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32: confidences of half-precision features would round to ~3 significant digits."""
    return torch.promote_types(dtype, torch.float32)


def similarity(feat0: torch.Tensor, feat1: torch.Tensor, temperature: float, mask0: torch.Tensor | None = None,
               mask1: torch.Tensor | None = None) -> torch.Tensor:
    """(N, B, C) x (N, S, C) tokens → (N, B, S) ``<f0 / sqrt(C), f1 / sqrt(C)> / temperature``, invalid pairs at
    -INF. ``mask0`` (N, B) / ``mask1`` (N, S), 1 = valid; no (N, B, S) mask is built."""
    c = feat0.shape[-1]
    sim = torch.matmul(feat0 / c**0.5, (feat1 / c**0.5).transpose(1, 2)).div_(temperature)
    fill = _masked_value(sim.dtype)
    if mask0 is not None:
        sim.masked_fill_(~mask0.bool()[:, :, None], fill)
    if mask1 is not None:
        sim.masked_fill_(~mask1.bool()[:, None, :], fill)
    return sim


def _row_blocks(l: int, rows: int) -> list[slice]:
    return [slice(start, min(start + rows, l)) for start in range(0, l, rows)]


def _reduce_rows(sim: torch.Tensor, blk: slice, col_max: torch.Tensor, col_sum: torch.Tensor,
                 mask0: torch.Tensor | None, mask1: torch.Tensor | None, maxima: tuple[torch.Tensor, ...]) -> None:
    """Folds the complete rows ``blk`` of the similarity (``sim``, (N, B, S), overwritten) into the maxima of the
    confidence: row max and argmax (N, L) at ``blk`` and the running column max (N, S)."""
    row_max, row_arg, best_in_col = maxima
    conf = F.softmax(sim, 2).mul_(sim.sub_(col_max[:, None]).exp_().div_(col_sum[:, None]))
    if mask0 is not None:
        conf.masked_fill_(~mask0.bool()[:, :, None], 0.0)
    if mask1 is not None:
        conf.masked_fill_(~mask1.bool()[:, None, :], 0.0)
    row_max[:, blk], row_arg[:, blk] = conf.max(2)
    torch.maximum(best_in_col, conf.amax(1), out=best_in_col)


def _maxima(n: int, l: int, s: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (like.new_empty((n, l)), torch.empty((n, l), dtype=torch.long, device=like.device),
            like.new_full((n, s), -float("inf")))


def dense_maxima(feat0: torch.Tensor, feat1: torch.Tensor, temperature: float, mask0: torch.Tensor | None = None,
                 mask1: torch.Tensor | None = None, rows: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`blockwise_maxima` from one (N, L, S) similarity GEMM: the column normalisers and the confidence rows
    are formed ``rows`` rows at a time in cache-sized scratch (default: about :data:`SCRATCH_ELEMENTS` values), so
    the only large matrix is the similarity itself, read a few times and never copied."""
    n, l, s = feat0.shape[0], feat0.shape[1], feat1.shape[1]
    rows = rows or max(1, SCRATCH_ELEMENTS // max(n * s, 1))
    sim = similarity(feat0, feat1, temperature, mask0, mask1)
    scratch = sim.new_empty((n, min(rows, l), s))
    col_max = sim.amax(1)
    col_sum = sim.new_zeros((n, s))
    for blk in _row_blocks(l, rows):
        part = scratch[:, : blk.stop - blk.start]
        col_sum.add_(torch.sub(sim[:, blk], col_max[:, None], out=part).exp_().sum(1))
    maxima = _maxima(n, l, s, sim)
    for blk in _row_blocks(l, rows):
        _reduce_rows(sim[:, blk], blk, col_max, col_sum, None if mask0 is None else mask0[:, blk], mask1, maxima)
    return maxima


def column_normalisers(feat0: torch.Tensor, feat1: torch.Tensor, temperature: float, mask0: torch.Tensor | None,
                       mask1: torch.Tensor | None, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Column max and column sum of ``exp(sim - max)`` (both (N, S)), streaming ``rows`` rows of sim at a time."""
    n, s = feat0.shape[0], feat1.shape[1]
    col_max = feat0.new_full((n, s), -float("inf"))
    col_sum = feat0.new_zeros((n, s))
    for blk in _row_blocks(feat0.shape[1], rows):
        sim = similarity(feat0[:, blk], feat1, temperature, None if mask0 is None else mask0[:, blk], mask1)
        new_max = torch.maximum(col_max, sim.amax(1))
        col_sum.mul_((col_max - new_max).exp_()).add_(sim.sub_(new_max[:, None]).exp_().sum(1))
        col_max = new_max
    return col_max, col_sum


def blockwise_maxima(feat0: torch.Tensor, feat1: torch.Tensor, temperature: float,
                     mask0: torch.Tensor | None = None, mask1: torch.Tensor | None = None,
                     rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row max (N, L), its column (N, L) and column max (N, S) of the dual-softmax confidence, never holding more
    than ``rows`` rows of it (default: about :data:`BLOCK_ELEMENTS` values per block)."""
    n, l, s = feat0.shape[0], feat0.shape[1], feat1.shape[1]
    rows = rows or max(1, BLOCK_ELEMENTS // max(n * s, 1))
    col_max, col_sum = column_normalisers(feat0, feat1, temperature, mask0, mask1, rows)
    maxima = _maxima(n, l, s, col_max)
    for blk in _row_blocks(l, rows):
        m0 = None if mask0 is None else mask0[:, blk]
        sim = similarity(feat0[:, blk], feat1, temperature, m0, mask1)
        _reduce_rows(sim, blk, col_max, col_sum, m0, mask1, maxima)
    return maxima
