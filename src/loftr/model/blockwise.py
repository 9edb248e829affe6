"""Inference-time dual-softmax coarse matching: dense with in-place softmaxes, or blockwise without any (N, L, S)
matrix.

With ``sim`` the scaled similarity of the two token sets, the confidence is
``conf[i, j] = softmax_j(sim)[i, j] * softmax_i(sim)[i, j]`` and a coarse match needs only three reductions of it:
each row's max and argmax and each column's max. The blockwise path streams row blocks of ``sim`` twice:

1. the column normalisers: each column's max and sum of ``exp(sim - max)``, accumulated over the blocks with the
   usual online rescaling of a streaming softmax;
2. each block's exact confidence rows (the row softmax is complete inside a block), reduced to the row max/argmax
   and folded into a running column max.

Both paths form every confidence value with the same operations, so they select the same matches. Peak memory of the
blockwise path is a few (N, rows, S) blocks; the price is a second similarity GEMM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

INF = 1e9
BLOCK_ELEMENTS = 1 << 22  # default block: about 4M similarity values (16 MB in float32) per block


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


def _zero_invalid_(conf: torch.Tensor, mask0: torch.Tensor | None, mask1: torch.Tensor | None) -> torch.Tensor:
    if mask0 is not None:
        conf.masked_fill_(~mask0.bool()[:, :, None], 0.0)
    if mask1 is not None:
        conf.masked_fill_(~mask1.bool()[:, None, :], 0.0)
    return conf


def _confidence_rows(sim: torch.Tensor, col_max: torch.Tensor, col_sum: torch.Tensor) -> torch.Tensor:
    """Dual-softmax confidence of complete rows (N, B, S) given the column max/sum (N, S); consumes ``sim``."""
    conf = F.softmax(sim, 2)
    col = sim.sub_(col_max[:, None]).exp_().div_(col_sum[:, None])
    return conf.mul_(col)


def dense_dual_softmax(feat0: torch.Tensor, feat1: torch.Tensor, temperature: float,
                       mask0: torch.Tensor | None = None, mask1: torch.Tensor | None = None) -> torch.Tensor:
    """(N, L, S) confidence for inference: two (N, L, S) matrices alive, no boolean (N, L, S) masks."""
    sim = similarity(feat0, feat1, temperature, mask0, mask1)
    col_max = sim.amax(1)
    col_sum = (sim - col_max[:, None]).exp_().sum(1)
    return _zero_invalid_(_confidence_rows(sim, col_max, col_sum), mask0, mask1)


def _row_blocks(l: int, rows: int) -> list[slice]:
    return [slice(start, min(start + rows, l)) for start in range(0, l, rows)]


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
    row_max = feat0.new_empty((n, l))
    row_arg = torch.empty((n, l), dtype=torch.long, device=feat0.device)
    best_in_col = feat0.new_full((n, s), -float("inf"))
    for blk in _row_blocks(l, rows):
        m0 = None if mask0 is None else mask0[:, blk]
        conf = _confidence_rows(similarity(feat0[:, blk], feat1, temperature, m0, mask1), col_max, col_sum)
        conf = _zero_invalid_(conf, m0, mask1)
        row_max[:, blk], row_arg[:, blk] = conf.max(2)
        torch.maximum(best_in_col, conf.amax(1), out=best_in_col)
    return row_max, row_arg, best_in_col
