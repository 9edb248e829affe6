"""The backbone's full-resolution stem (7x7 stride-2 convolution + the stride-1 first stage) in horizontal strips.

At 1/2 resolution the first ResNet stage is the memory peak of the backbone: a residual block holds its input, its
first convolution's output and its second convolution's output at once, three maps of ``initial_dim`` channels at half
the image size (750 MB for a 1600x1200 image with the official widths). Computing the stage in strips of rows keeps
one full map (the stage's output) plus strip-sized temporaries.

A strip of output rows [a, b) needs its input grown by one row on each side per 3x3 convolution (4 in the first
stage) and the image rows the 7x7 stride-2 convolution reads for those. Each convolution runs without vertical padding
on the grown strip and rows outside the map are zeroed after it, which is exactly what the dense map's zero padding
gives the next convolution; so the strips equal the dense computation up to float rounding (the convolution
algorithm may differ with the input's height). Inference only (BatchNorms folded or not, any dtype/layout).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STRIP_BYTES = 1 << 25  # target size of one strip-sized map (32 MiB)
MIN_STRIP_ROWS = 16


def _conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` with its horizontal padding only (the strip carries its vertical context)."""
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, (0, conv.padding[1]))


def _zero_outside(x: torch.Tensor, first_row: int, height: int) -> torch.Tensor:
    """Zero the rows of ``x`` (rows first_row.. of a map of ``height`` rows) that lie outside the map, in place."""
    top = max(0, -first_row)
    bottom = max(0, first_row + x.shape[2] - height)
    if top:
        x[:, :, :top] = 0
    if bottom:
        x[:, :, x.shape[2] - bottom:] = 0
    return x


def _block(block: nn.Module, x: torch.Tensor, first_row: int, height: int) -> tuple[torch.Tensor, int]:
    """One stride-1 BasicBlock on a strip whose first row is ``first_row``; returns the strip 2 rows shorter on
    each side and its first row."""
    y = _zero_outside(block.relu(block.bn1(_conv(block.conv1, x))), first_row + 1, height)
    y = block.bn2(_conv(block.conv2, y))
    y = block.relu(y.add_(x[:, :, 2:-2]))
    return _zero_outside(y, first_row + 2, height), first_row + 2


def stem_rows(image_height: int) -> int:
    """Rows of the stem's output map for an image of ``image_height`` rows (7x7, stride 2, padding 3)."""
    return (image_height - 1) // 2 + 1


def stem_in_strips(backbone: nn.Module, image: torch.Tensor, strip_rows: int | None = None) -> torch.Tensor:
    """``layer1(relu(bn1(conv1(image))))`` of a :class:`~loftr.model.backbone.ResNetFPN`, strip by strip.

    image (N, 1, H, W) → (N, dims[0], H2, W2) with the memory format of the dense computation's output.
    """
    blocks = list(backbone.layer1)
    if any(b.downsample is not None for b in blocks):
        raise ValueError("the strip-wise stem needs a stride-1 first stage")
    n, _, h, w = image.shape
    h2 = stem_rows(h)
    conv1 = backbone.conv1
    halo = 2 * len(blocks)  # one row per 3x3 convolution, two per block
    channels = blocks[-1].conv2.out_channels
    w2 = (w - 1) // 2 + 1
    if strip_rows is None:
        strip_rows = max(MIN_STRIP_ROWS, STRIP_BYTES // max(1, n * channels * w2 * image.element_size()))
    nhwc = conv1.weight.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    out = torch.empty((n, channels, h2, w2), dtype=image.dtype, device=image.device, memory_format=fmt)
    for a in range(0, h2, strip_rows):
        b = min(a + strip_rows, h2)
        r0, r1 = a - halo, b + halo  # stem rows of the grown strip
        i0, i1 = 2 * r0 - 3, 2 * (r1 - 1) + 3 + 1  # image rows the 7x7 stride-2 convolution reads for them
        crop = image[:, :, max(i0, 0):min(i1, h)]
        crop = F.pad(crop, (0, 0, max(0, -i0), max(0, i1 - h)))  # zero rows beyond the image, as the padding
        crop = crop.contiguous(memory_format=fmt) if crop.shape[1] > 1 else crop.contiguous()
        if nhwc and crop.shape[1] == 1:  # one channel: give it NHWC strides so oneDNN stays in NHWC
            c_, hh, ww = crop.shape[1:]
            crop = crop.as_strided(crop.shape, (c_ * hh * ww, 1, ww * c_, c_))
        x = backbone.relu(backbone.bn1(F.conv2d(crop, conv1.weight, conv1.bias, conv1.stride, (0, conv1.padding[1]))))
        x = _zero_outside(x, r0, h2)
        first = r0
        for block in blocks:
            x, first = _block(block, x, first, h2)
        out[:, :, a:b] = x
    return out


__all__ = ["stem_in_strips", "stem_rows"]
