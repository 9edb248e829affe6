"""Fine stage: w×w windows around each coarse match, context from the coarse features, and sub-pixel expectation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .lazy_fine import LazyFineMap


def gather_windows(feat: torch.Tensor, b_ids: torch.Tensor, cell_ids: torch.Tensor, coarse_w: int, window: int,
                   stride: int) -> torch.Tensor:
    """The ``window``×``window`` patches of fine map ``feat`` (N, C, Hf, Wf) centred on coarse cells → (M, w*w, C).

    Coarse cell (r, c) sits on fine cell (stride*r, stride*c); the map is zero-padded by window//2. Equal to
    ``F.unfold(feat, window, stride=stride, padding=window // 2)`` indexed at the cells, without unfolding the
    whole map (which is window² times larger than the map).
    """
    pad = window // 2
    padded = F.pad(feat, (pad, pad, pad, pad))
    offsets = torch.arange(window, device=feat.device)
    rows = (cell_ids // coarse_w * stride)[:, None] + offsets  # (M, w) in padded coordinates
    cols = (cell_ids % coarse_w * stride)[:, None] + offsets
    patches = padded[b_ids[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (M, w, w, C)
    return patches.reshape(cell_ids.shape[0], window * window, feat.shape[1])


def _windows(feat: torch.Tensor | LazyFineMap, b_ids: torch.Tensor, cell_ids: torch.Tensor, coarse_w: int,
             window: int, stride: int) -> torch.Tensor:
    if isinstance(feat, LazyFineMap):
        return feat.windows(b_ids, cell_ids, coarse_w, window, stride)
    return gather_windows(feat, b_ids, cell_ids, coarse_w, window, stride)


class FinePreprocess(nn.Module):
    """Crops the fine windows of both images and, optionally, merges in the transformed coarse feature of the cell."""

    def __init__(self, d_model_c: int, d_model_f: int, window: int, concat_coarse: bool = True) -> None:
        super().__init__()
        self.window, self.concat_coarse, self.d_model_f = window, concat_coarse, d_model_f
        if concat_coarse:
            self.down_proj = nn.Linear(d_model_c, d_model_f, bias=True)
            self.merge_feat = nn.Linear(2 * d_model_f, d_model_f, bias=True)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")
        self.fast = False  # inference: the coarse context is merged once per window, not once per window cell

    def forward(self, feat_f0: torch.Tensor | LazyFineMap, feat_f1: torch.Tensor | LazyFineMap, feat_c0: torch.Tensor,
                feat_c1: torch.Tensor, b_ids: torch.Tensor, i_ids: torch.Tensor, j_ids: torch.Tensor, w0_c: int,
                w1_c: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Fine maps (N, Cf, Hf, Wf) (or :class:`LazyFineMap`), transformed coarse tokens (N, L|S, Cc), match ids
        (M,) → (M, w*w, Cf) each."""
        ww = self.window**2
        if b_ids.numel() == 0:
            empty = (feat_f0 if isinstance(feat_f0, torch.Tensor) else feat_c0).new_empty((0, ww, self.d_model_f))
            return empty, empty.clone()
        win0 = _windows(feat_f0, b_ids, i_ids, w0_c, self.window, stride)
        win1 = _windows(feat_f1, b_ids, j_ids, w1_c, self.window, stride)
        if not self.concat_coarse:
            return win0, win1
        ctx = self.down_proj(torch.cat([feat_c0[b_ids, i_ids], feat_c1[b_ids, j_ids]], 0))  # (2M, Cf)
        if self.fast and not self.training and not torch.is_grad_enabled():
            merged = self._merge_split(torch.cat([win0, win1], 0), ctx)
        else:
            merged = self.merge_feat(torch.cat([torch.cat([win0, win1], 0), ctx[:, None].expand(-1, ww, -1)], -1))
        win0, win1 = torch.chunk(merged, 2, dim=0)
        return win0, win1

    def _merge_split(self, windows: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """``merge_feat([window cell, context])`` as ``W_f @ cell + (W_c @ context + b)``: the context half of the
        product is computed once per window. windows (2M, w*w, Cf), ctx (2M, Cf) → (2M, w*w, Cf)."""
        w_feat, w_ctx = self.merge_feat.weight.split(self.d_model_f, dim=1)
        return F.linear(windows, w_feat).add_(F.linear(ctx, w_ctx, self.merge_feat.bias)[:, None])


def spatial_expectation(feat0: torch.Tensor, feat1: torch.Tensor) -> torch.Tensor:
    """Sub-pixel offset of the window centre of image0 in the window of image1, with its spread.

    feat0/feat1 (M, w*w, C) → (M, 3): expected (x, y) in [-1, 1] window units of the softmax heat map of the centre
    feature's similarities (temperature 1/sqrt(C)), and the summed std of x and y.
    """
    m, ww, c = feat0.shape
    w = int(round(ww**0.5))
    if m == 0:
        return feat0.new_zeros((0, 3))
    centre = feat0[:, ww // 2, :]
    sim = torch.einsum("mc,mrc->mr", centre, feat1)
    heat = F.softmax((1.0 / c**0.5) * sim, dim=1)  # (M, w*w)
    axis = torch.linspace(-1, 1, w, device=heat.device, dtype=heat.dtype)
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)  # (w*w, 2) as (x, y)
    mean = heat @ grid  # (M, 2)
    var = heat @ grid**2 - mean**2
    std = var.clamp(min=1e-10).sqrt().sum(-1)
    return torch.cat([mean, std[:, None]], -1)


MAX_DROP_SHARE = 0.2  # fine_max_std never drops more than this share of a pair's matches


def sharp_matches(std: torch.Tensor, b_ids: torch.Tensor, max_std: float | None,
                  max_share: float = MAX_DROP_SHARE) -> torch.Tensor:
    """(M,) bool: the matches to keep when those with a heat map spread wider than ``max_std`` are dropped.

    std (M,) the spread of :func:`spatial_expectation`, b_ids (M,) the pair of each match; ``max_std`` None, 0 or
    inf keeps every match. At most the widest ``max_share`` of a pair's matches go: where every heat map of a pair is
    wide (a large scale change, a blurred image) the pair keeps its sharpest matches rather than losing them all.
    """
    if not max_std or math.isinf(max_std):
        return torch.ones_like(std, dtype=torch.bool)
    keep = std <= max_std
    for b in torch.unique(b_ids[~keep]).tolist():
        mine = b_ids == b
        s = std[mine]
        allowed = int(s.numel() * max_share)  # drops allowed in this pair
        if int((s > max_std).sum()) > allowed:  # keep all but the `allowed` widest
            order = torch.argsort(s, descending=True, stable=True)
            k = torch.ones_like(s, dtype=torch.bool)
            k[order[:allowed]] = False
            keep[mine] = k
    return keep
