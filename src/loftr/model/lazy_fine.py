"""The fine FPN map computed only where the fine stage reads it: the windows around the coarse matches.

The fine stage reads one w×w window of the finest FPN map per coarse match. The top-down FPN levels that produce
that map (for resolution (8, 2): a 1/4 and a 1/2 level, each a 1x1 lateral projection plus a bilinear 2x upsampling
of the level above, then two 3x3 convolutions) are about 45 % of the backbone's work and most of its memory, and at
usual match counts most of their output is never read.

:class:`LazyFineMap` keeps the ResNet stage outputs and the coarse map and evaluates the FPN only where needed:

1. the finest level on square tiles of T×T coarse cells that hold a match (their windows overlap);
2. each level above on the square tiles of its own map that the level below reads, into a zero map: a region of a
   level needs its lateral input grown by 2 (two unpadded 3x3 convolutions) and the rows/columns of the level above
   that its bilinear upsampling reads. When the tiles would cover most of a level (many matches spread over the
   image), the level and those above it are computed whole, as the dense FPN does: about the same multiply-adds,
   without the tiles' halos, gathers and masks.

The zero padding of the dense convolutions is reproduced by zeroing every intermediate outside the map, and the
upsampling uses the dense map's align-corners coordinates, so the windows equal those of the dense map up to float
rounding. Tile sizes are picked per call by a cost model (small tiles for sparse matches, large ones ≈ the dense
map when matches are everywhere), and tiles are processed in chunks of bounded memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import upsample_to

TILE_SIZES = (1, 2, 4, 8, 16, 32)  # finest level, in coarse cells
UPPER_TILE_SIZES = (4, 8, 16, 32, 64)  # levels above, in pixels of their own map
DENSE_BIAS = 1.25  # a level above is computed whole when that costs at most this times its tiles' multiply-adds
CHUNK_ELEMENTS = 1 << 23  # values of the largest per-chunk intermediate (32 MB in float32)


def _offsets(start: torch.Tensor, n: int) -> torch.Tensor:
    """(P, n) positions start + 0..n-1."""
    return start[:, None] + torch.arange(n, device=start.device)


def _inside(y0: torch.Tensor, x0: torch.Tensor, h: int, w: int, hw: tuple[int, int]) -> torch.Tensor:
    """(P, h, w, 1) bool: which positions of the P regions [y0, y0+h) x [x0, x0+w) lie inside an (H, W) map."""
    ys, xs = _offsets(y0, h), _offsets(x0, w)
    in_y = (ys >= 0) & (ys < hw[0])
    in_x = (xs >= 0) & (xs < hw[1])
    return (in_y[:, :, None] & in_x[:, None, :])[..., None]


def _gather(nhwc: torch.Tensor, b: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(P, h, w, C) regions of an (N, H, W, C) map (outside positions read the nearest edge; callers mask them)."""
    rows = _offsets(y0, h).clamp_(0, nhwc.shape[1] - 1)
    cols = _offsets(x0, w).clamp_(0, nhwc.shape[2] - 1)
    return nhwc[b[:, None, None], rows[:, :, None], cols[:, None, :]]


def _source(pos: torch.Tensor, size: int, src_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align-corners bilinear sources of positions ``pos`` (P, n) of a map of ``size`` that is the 2x upsampling of
    a map of ``src_size`` (cropped): lower index, upper index, weight of the upper one, as F.interpolate computes."""
    src = pos.clamp(0, size - 1).to(torch.float32) * ((src_size - 1) / (2 * src_size - 1))
    i0 = src.long()
    return i0, (i0 + 1).clamp_(max=src_size - 1), src - i0


def _source_span(y0: torch.Tensor, h: int, size: int, src_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last row of the level above that the upsampling reads for rows [y0, y0+h) (clamped to the map)."""
    first, _, _ = _source(y0[:, None], size, src_size)
    _, last, _ = _source((y0 + h - 1)[:, None], size, src_size)
    return first[:, 0], last[:, 0]


def _cover(b: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor,
           shape: tuple[int, int, int]) -> torch.Tensor:
    """(N, H, W) bool: the union of the rectangles [y0, y1] x [x0, x1] (inclusive) of images b."""
    n, h, w = shape
    marks = torch.zeros((n, h + 1, w + 1), dtype=torch.int32, device=b.device)
    ones = torch.ones_like(b, dtype=torch.int32)
    for ys, xs, sign in ((y0, x0, 1), (y0, x1 + 1, -1), (y1 + 1, x0, -1), (y1 + 1, x1 + 1, 1)):
        marks.index_put_((b, ys, xs), ones * sign, accumulate=True)
    return marks.cumsum(1).cumsum(2)[:, :h, :w] > 0


def _lerp(t: torch.Tensor, dim: int, i0: torch.Tensor, i1: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of (P, A, B, C) ``t`` along ``dim`` (1 or 2) at per-region indices (P, n).

    As one batched matmul with a (P, n, A|B) weight matrix holding ``1 - frac`` at ``i0`` and ``frac`` at ``i1``
    (the weights rounded to ``t``'s dtype, as a lerp in that dtype would): no gathers of ``t``."""
    n_regions, n = i0.shape
    weights = t.new_zeros((n_regions, n, t.shape[dim]))
    weights.scatter_add_(2, i0[:, :, None], (1 - frac)[:, :, None].to(t.dtype))
    weights.scatter_add_(2, i1[:, :, None], frac[:, :, None].to(t.dtype))
    if dim == 1:
        return torch.bmm(weights, t.reshape(n_regions, t.shape[1], -1)).view(n_regions, n, *t.shape[2:])
    return torch.matmul(weights[:, None], t)


class LazyFineMap:
    """The finest FPN map of a :class:`~loftr.model.backbone.ResNetFPN`, evaluated on demand around windows.

    Built from the backbone's ``encode`` stages and ``coarse_map``; :meth:`windows` is a drop-in replacement for
    :func:`~loftr.model.fine.gather_windows` on the dense map. Inference only (no autograd).
    """

    def __init__(self, backbone: nn.Module, stages: list[torch.Tensor], coarse: torch.Tensor) -> None:
        top, finest = backbone._top, backbone._finest
        self.levels = [  # finest first: (lateral 1x1, merge head, stage output as N, H, W, C)
            (getattr(backbone, f"layer{k}_outconv"), getattr(backbone, f"layer{k}_outconv2"),
             stages[k - 1].permute(0, 2, 3, 1))
            for k in range(finest, top)
        ]
        self.coarse = coarse.permute(0, 2, 3, 1)
        self.channels = self.levels[0][1][3].out_channels

    def select(self, start: int, stop: int) -> "LazyFineMap":
        """The same map for images ``start:stop`` of the batch."""
        part = object.__new__(LazyFineMap)
        part.levels = [(lat, head, stage[start:stop]) for lat, head, stage in self.levels]
        part.coarse, part.channels = self.coarse[start:stop], self.channels
        return part

    def windows(self, b_ids: torch.Tensor, cell_ids: torch.Tensor, coarse_w: int, window: int,
                stride: int) -> torch.Tensor:
        """The ``window``×``window`` patches centred on coarse cells ``cell_ids`` of images ``b_ids`` (M,) →
        (M, w*w, C), as :func:`~loftr.model.fine.gather_windows` would cut them from the dense map."""
        m = cell_ids.shape[0]
        out = self.coarse.new_empty((m, window, window, self.channels))
        if m == 0:
            return out.view(0, window * window, self.channels)
        rows, cols = cell_ids // coarse_w, cell_ids % coarse_w
        t = self.tile_size(b_ids, rows, cols, window, stride)
        tiles, inverse, (tb, tr, tc) = self._tiles(b_ids, rows, cols, t)
        size = stride * (t - 1) + window  # fine rows/cols of a tile's windows
        y0, x0 = stride * t * tr - window // 2, stride * t * tc - window // 2
        above = self._upper_levels(tb, y0, x0, size)
        per_chunk = max(1, CHUNK_ELEMENTS // ((size + 4) ** 2 * self.levels[0][1][0].in_channels))
        for start in range(0, tiles, per_chunk):
            stop = min(start + per_chunk, tiles)
            maps = self._level(0, tb[start:stop], y0[start:stop], x0[start:stop], size, above)
            sel = torch.nonzero((inverse >= start) & (inverse < stop)).squeeze(1)
            wr = _offsets(stride * (rows[sel] - t * tr[inverse[sel]]), window)
            wc = _offsets(stride * (cols[sel] - t * tc[inverse[sel]]), window)
            out[sel] = maps[(inverse[sel] - start)[:, None, None], wr[:, :, None], wc[:, None, :]]
        return out.view(m, window * window, self.channels)

    def tile_size(self, b_ids: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, window: int,
                  stride: int) -> int:
        """The finest-level tile side (in coarse cells) of least estimated work: tiles holding a match × work."""
        def work(t: int) -> int:
            return self._tiles(b_ids, rows, cols, t)[0] * self._tile_cost(0, stride * (t - 1) + window)
        return min(TILE_SIZES, key=work)

    def _tiles(self, b_ids: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, t: int
               ) -> tuple[int, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Number of distinct tiles, each match's tile, and the tiles' (image, tile row, tile column)."""
        n_r, n_c = -(-self.coarse.shape[1] // t), -(-self.coarse.shape[2] // t)
        key = (b_ids * n_r + rows // t) * n_c + cols // t
        uniq, inverse = torch.unique(key, return_inverse=True)
        return uniq.numel(), inverse, (uniq // (n_r * n_c), uniq // n_c % n_r, uniq % n_c)

    def _tile_cost(self, idx: int, h: int) -> int:
        """Multiply-adds of an h×h output region of level ``idx`` (its input grows by the convolutions' halos)."""
        lateral, head, _ = self.levels[idx]
        cm, ck = head[0].out_channels, head[3].out_channels
        return (h + 4) ** 2 * lateral.in_channels * cm + 9 * cm * ((h + 2) ** 2 * cm + h * h * ck)

    def _hw(self, idx: int) -> tuple[int, int]:
        """Size of the map of level ``idx`` (len(levels) = the coarse map)."""
        t = self.levels[idx][2] if idx < len(self.levels) else self.coarse
        return t.shape[1], t.shape[2]

    def _upper_levels(self, b: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, size: int) -> torch.Tensor:
        """The map of level 1 (or the coarse map when there is none) on the regions the finest tiles read: each level
        above is computed on the tiles of its map that the level below reads, zero elsewhere, or whole (see
        :data:`DENSE_BIAS`; then every level above it is whole too)."""
        plans = []  # per upper level: (image, y0, x0, tile side) of its tiles, or None for the whole map
        for idx in range(1, len(self.levels)):
            hw_below, hw = self._hw(idx - 1), self._hw(idx)
            ry0, ry1 = _source_span(y0 - 2, size + 4, hw_below[0], hw[0])
            rx0, rx1 = _source_span(x0 - 2, size + 4, hw_below[1], hw[1])
            need = _cover(b, ry0, ry1, rx0, rx1, (self.coarse.shape[0], *hw))
            b, y0, x0, size = self._covering_tiles(idx, need)
            dense = self.coarse.shape[0] * self._pixel_cost(idx) * hw[0] * hw[1]
            if dense <= DENSE_BIAS * b.shape[0] * self._tile_cost(idx, size):
                plans.extend([None] * (len(self.levels) - idx))
                break
            plans.append((b, y0, x0, size))
        above = self.coarse
        for idx in range(len(self.levels) - 1, 0, -1):
            plan = plans[idx - 1]
            above = self._whole(idx, above) if plan is None else self._fill(idx, *plan, above)
        return above

    def _pixel_cost(self, idx: int) -> int:
        """Multiply-adds per output pixel of level ``idx`` computed whole (lateral 1x1 + two 3x3 convolutions)."""
        lateral, head, _ = self.levels[idx]
        cm, ck = head[0].out_channels, head[3].out_channels
        return lateral.in_channels * cm + 9 * cm * (cm + ck)

    def _whole(self, idx: int, above: torch.Tensor) -> torch.Tensor:
        """(N, H, W, C) map of level ``idx`` computed whole, by the dense FPN's operations; ``above``: the map of
        level ``idx + 1`` (N, H', W', C), possibly padded beyond its true size."""
        lateral, head, stage = self.levels[idx]
        ha, wa = self._hw(idx + 1)
        x = lateral(stage.permute(0, 3, 1, 2))
        x = x.add_(upsample_to(above[:, :ha, :wa].permute(0, 3, 1, 2), x))
        return head(x).permute(0, 2, 3, 1)

    def _covering_tiles(self, idx: int, need: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """The square tiles (image, y0, x0, side) of level ``idx`` that cover ``need`` (N, H, W) at least work."""
        def blocks(side: int) -> torch.Tensor:
            n, h, w = need.shape
            padded = F.pad(need, (0, -w % side, 0, -h % side))
            return padded.view(n, padded.shape[1] // side, side, padded.shape[2] // side, side).any(4).any(2)

        side = min(UPPER_TILE_SIZES, key=lambda s: int(blocks(s).sum()) * self._tile_cost(idx, s))
        b, ty, tx = torch.nonzero(blocks(side), as_tuple=True)
        return b, ty * side, tx * side, side

    def _fill(self, idx: int, b: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, side: int,
              above: torch.Tensor) -> torch.Tensor:
        """(N, H', W', C) map of level ``idx`` (H', W' padded to whole tiles) computed on the given tiles only."""
        h, w = self._hw(idx)
        n, c = self.coarse.shape[0], self.levels[idx][1][3].out_channels
        n_r, n_c = -(-h // side), -(-w // side)
        out = above.new_zeros((n, n_r, side, n_c, side, c))
        per_chunk = max(1, CHUNK_ELEMENTS // ((side + 4) ** 2 * self.levels[idx][1][0].in_channels))
        for start in range(0, b.shape[0], per_chunk):
            part = slice(start, start + per_chunk)
            out[b[part], y0[part] // side, :, x0[part] // side] = self._level(idx, b[part], y0[part], x0[part],
                                                                              side, above)
        return out.view(n, n_r * side, n_c * side, c)

    def _level(self, idx: int, b: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, size: int,
               above: torch.Tensor) -> torch.Tensor:
        """Output of FPN level ``idx`` (0 = finest) on P square regions → (P, size, size, C); ``above``: the map of
        level ``idx + 1`` (N, H', W', C), valid wherever these regions read it."""
        lateral, head, stage = self.levels[idx]
        hw = self._hw(idx)
        m0y, m0x, ms = y0 - 2, x0 - 2, size + 4
        merged = F.linear(_gather(stage, b, m0y, m0x, ms, ms), lateral.weight.flatten(1), lateral.bias)
        merged.add_(self._upsampled(b, m0y, m0x, ms, hw, above, self._hw(idx + 1)))
        merged.masked_fill_(~_inside(m0y, m0x, ms, ms, hw), 0.0)
        x = merged.permute(0, 3, 1, 2)  # (P, C, ms, ms), channels-last
        x = head[2](head[1](F.conv2d(x, head[0].weight, head[0].bias)))
        x.masked_fill_(~_inside(y0 - 1, x0 - 1, size + 2, size + 2, hw).permute(0, 3, 1, 2), 0.0)
        x = F.conv2d(x, head[3].weight, head[3].bias).permute(0, 2, 3, 1)
        return x.masked_fill_(~_inside(y0, x0, size, size, hw), 0.0)

    @staticmethod
    def _upsampled(b: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, size: int, hw: tuple[int, int],
                   above: torch.Tensor, above_hw: tuple[int, int]) -> torch.Tensor:
        """The 2x upsampling of ``above`` (true size ``above_hw``) at P square regions of a map of size ``hw``."""
        i0, i1, fy = _source(_offsets(y0, size), hw[0], above_hw[0])
        j0, j1, fx = _source(_offsets(x0, size), hw[1], above_hw[1])
        ry0, rx0 = i0[:, 0], j0[:, 0]
        rh, rw = int((i1[:, -1] - ry0).max()) + 1, int((j1[:, -1] - rx0).max()) + 1
        src = _gather(above, b, ry0, rx0, rh, rw)
        src = _lerp(src, 2, j0 - rx0[:, None], j1 - rx0[:, None], fx)
        return _lerp(src, 1, i0 - ry0[:, None], i1 - ry0[:, None], fy)
