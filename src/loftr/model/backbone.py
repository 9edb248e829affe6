"""ResNet-FPN feature extractor: coarse (1/8 or 1/16) and fine (1/2 or 1/4) maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import BackboneConfig


STRIP_PIXELS = 1 << 20  # fast inference computes the stem of larger inputs (pixels per pass) in strips


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, padding=0, bias=False)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a residual (1x1 projection when strided)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.conv2 = conv3x3(cout, cout)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None if stride == 1 else nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(y.add_(x) if not torch.is_grad_enabled() else x + y)  # in place without autograd


def _merge_head(cin: int, cout: int) -> nn.Sequential:
    """FPN merge: 3x3 conv, BN, LeakyReLU, 3x3 conv to the finer level's width."""
    return nn.Sequential(conv3x3(cin, cin), nn.BatchNorm2d(cin), nn.LeakyReLU(), conv3x3(cin, cout))


def upsample_to(coarse: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """2x bilinear (align_corners) upsampling, cropped to ``like``'s size for sides that are not multiples of 8."""
    up = F.interpolate(coarse, scale_factor=2.0, mode="bilinear", align_corners=True)
    return up[..., : like.shape[2], : like.shape[3]]


class ResNetFPN(nn.Module):
    """ResNet with 3 (resolution 8/2) or 4 (16/4) stages of two BasicBlocks, and a top-down FPN.

    forward: (N, 1, H, W) image → coarse (N, dims[-1], H/8|16, W/8|16), fine (N, dims[0]|dims[1], H/2|4, W/2|4).
    Parameter names follow the official implementation so its checkpoints load unchanged.
    """

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        dims = config.block_dims
        self.resolution = config.resolution
        self.conv1 = nn.Conv2d(1, config.initial_dim, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(config.initial_dim)
        self.relu = nn.ReLU(inplace=True)
        cin = config.initial_dim
        for k, dim in enumerate(dims, start=1):
            stride = 1 if k == 1 else 2
            setattr(self, f"layer{k}", nn.Sequential(BasicBlock(cin, dim, stride), BasicBlock(dim, dim, 1)))
            cin = dim
        # FPN: the top stage gets a 1x1 projection; each finer stage used a projection + merge head.
        top = len(dims)
        finest = 2 if top == 4 else 1
        setattr(self, f"layer{top}_outconv", conv1x1(dims[-1], dims[-1]))
        for k in range(top - 1, finest - 1, -1):
            setattr(self, f"layer{k}_outconv", conv1x1(dims[k - 1], dims[k]))
            setattr(self, f"layer{k}_outconv2", _merge_head(dims[k], dims[k - 1]))
        self._top, self._finest = top, finest
        self.fast = False  # inference: the stem of large images in strips (see .strips)
        self.strip_pixels = STRIP_PIXELS
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stages = self.encode(image)
        coarse = self.coarse_map(stages)
        return coarse, self.fpn(stages, coarse)

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """(N, 1, H, W) image → the outputs of the ResNet stages, finest (1/2) first. At inference (eval mode, no
        autograd) the stem of a large image runs in strips (:mod:`.strips`); the fast copy (``fast``) also takes the
        image in its weights' dtype."""
        inference = not self.training and not torch.is_grad_enabled()
        if self.fast and inference:
            image = image.to(self.conv1.weight.dtype)
        strips = (inference and image.shape[0] * image.shape[2] * image.shape[3] > self.strip_pixels
                  and all(b.downsample is None for b in self.layer1))
        if strips:
            from .strips import stem_in_strips

            x = stem_in_strips(self, image)
        else:
            x = self.relu(self.bn1(self.conv1(image)))
        stages = []
        for k in range(1, self._top + 1):
            if k == 1 and strips:
                stages.append(x)
                continue
            for block in getattr(self, f"layer{k}"):  # block by block: each input is freed once consumed
                x = block(x)
            stages.append(x)
        return stages

    def fpn_names(self) -> list[str]:
        """Names of the FPN's lateral projections and merge heads below the coarse level: the layers that shape only
        the fine map (the coarse map does not depend on them)."""
        return [f"layer{k}_outconv{suffix}" for k in range(self._top - 1, self._finest - 1, -1) for suffix in ("", "2")]

    def coarse_map(self, stages: list[torch.Tensor]) -> torch.Tensor:
        """The coarse map: 1x1 projection of the last stage."""
        return getattr(self, f"layer{self._top}_outconv")(stages[-1])

    def fpn(self, stages: list[torch.Tensor], coarse: torch.Tensor) -> torch.Tensor:
        """Top-down pass from the coarse map to the fine map (see :mod:`.lazy_fine` for a windowed version)."""
        out = coarse
        for k in range(self._top - 1, self._finest - 1, -1):
            lateral = getattr(self, f"layer{k}_outconv")(stages[k - 1])
            up = upsample_to(out, lateral)
            merged = lateral.add_(up) if not torch.is_grad_enabled() else lateral + up
            out = getattr(self, f"layer{k}_outconv2")(merged)
        return out
