"""2-D sine positional encoding of the coarse feature maps."""

from __future__ import annotations

import math

import torch
from torch import nn


def sine_encoding(d_model: int, height: int, width: int, temp_bug_fix: bool = True) -> torch.Tensor:
    """(1, d_model, height, width) encoding: channels 4k..4k+3 = sin x, cos x, sin y, cos y at frequency k.

    Positions count from 1, as in the reference. ``temp_bug_fix=False`` reproduces the frequencies of the released
    ds/ot checkpoints, whose exponent was computed as ``(-log(1e4) / d_model) // 2`` (= -1): frequency k is e^-2k/2.
    The values at (y, x) do not depend on the map size, so a map of any size gets the same encoding as a crop of a
    larger one.
    """
    shape = (height, width)
    y = torch.ones(shape).cumsum(0).float().unsqueeze(0)
    x = torch.ones(shape).cumsum(1).float().unsqueeze(0)
    steps = torch.arange(0, d_model // 2, 2).float()
    if temp_bug_fix:
        div = torch.exp(steps * (-math.log(10000.0) / (d_model // 2)))
    else:
        div = torch.exp(steps * ((-math.log(10000.0) / d_model) // 2))
    div = div[:, None, None]
    pe = torch.zeros((d_model, *shape))
    pe[0::4] = torch.sin(x * div)
    pe[1::4] = torch.cos(x * div)
    pe[2::4] = torch.sin(y * div)
    pe[3::4] = torch.cos(y * div)
    return pe.unsqueeze(0)


class PositionEncodingSine(nn.Module):
    """Adds :func:`sine_encoding` to (N, C, H, W) maps; the table grows with the input (cached, not a parameter)."""

    def __init__(self, d_model: int, temp_bug_fix: bool = True, max_shape: tuple[int, int] = (256, 256)) -> None:
        super().__init__()
        self.d_model = d_model
        self.temp_bug_fix = temp_bug_fix
        self.register_buffer("pe", sine_encoding(d_model, *max_shape, temp_bug_fix), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        if h > self.pe.shape[2] or w > self.pe.shape[3]:
            grown = sine_encoding(self.d_model, max(h, self.pe.shape[2]), max(w, self.pe.shape[3]), self.temp_bug_fix)
            self.pe = grown.to(self.pe.device)
        return x + self.pe[:, :, :h, :w].to(x.dtype)
