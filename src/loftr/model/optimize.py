"""Inference-time transforms: a fused, channels-last (optionally bfloat16, optionally compiled) copy of a LoFTR.

:func:`optimize_for_inference` never touches the model it is given. The copy

- folds every BatchNorm of the backbone into the convolution before it (the BatchNorm becomes ``nn.Identity``, so
  the copy's state_dict has conv biases and no BatchNorm entries: save the original, not the copy);
- stores the backbone weights channels-last, so oneDNN convolutions run on NHWC maps without reorders and the
  coarse map flattens into token-major rows for free;
- sets ``fast`` on the model and its stages: in eval mode with autograd off they take the inference shortcuts
  (stacked self-attention of both images, fused Q/K/V projections, in-place residuals, dual-softmax in place or
  blockwise, the fine map computed only around the coarse matches, the fine context merged once per window,
  images one at a time through the backbone when large);
- optionally converts the weights to bfloat16 (``dtype``; coarse matching and the sub-pixel expectation still run
  in float32) and compiles the backbone and the coarse transformer with ``torch.compile``.

Training never sees any of this: the shortcuts are off in train mode or with autograd on, and the copy is only
meant for inference. On CUDA, leave the weights in float32 and use autocast (fp16/bf16), as :class:`loftr.Matcher`
does.
"""

from __future__ import annotations

import copy
import sys

import torch
from torch import nn

from .loftr import LoFTR


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode (running statistics), folded in float64."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    fused = fused.to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(conv.weight.double() * scale[:, None, None, None])
        fused.bias.copy_((bias - bn.running_mean.double()) * scale + bn.bias.double())
    return fused


def fold_batchnorms(module: nn.Module) -> int:
    """Folds, in place, every BatchNorm2d that directly follows a Conv2d: consecutive children of an
    ``nn.Sequential``, and ``convK``/``bnK`` attribute pairs. Returns how many were folded."""
    folded = 0
    for parent in list(module.modules()):
        if isinstance(parent, nn.Sequential):
            for k in range(len(parent) - 1):
                if isinstance(parent[k], nn.Conv2d) and isinstance(parent[k + 1], nn.BatchNorm2d):
                    parent[k], parent[k + 1] = fold_batchnorm(parent[k], parent[k + 1]), nn.Identity()
                    folded += 1
        for name, child in list(parent.named_children()):
            if name.startswith("conv") and isinstance(child, nn.Conv2d):
                bn_name = "bn" + name[len("conv"):]
                bn = getattr(parent, bn_name, None)
                if isinstance(bn, nn.BatchNorm2d):
                    setattr(parent, name, fold_batchnorm(child, bn))
                    setattr(parent, bn_name, nn.Identity())
                    folded += 1
    return folded


def set_fast(model: nn.Module, fast: bool = True) -> nn.Module:
    """Switches the inference shortcuts of ``model`` and all its stages on or off (in place)."""
    for m in model.modules():
        if hasattr(m, "fast"):
            m.fast = fast
    return model


def without_shortcuts(model: LoFTR) -> LoFTR:
    """Switches off, in place, every inference shortcut of ``model``: those of ``fast`` and the size-triggered ones of
    the plain module (large images one at a time with the stem in strips and a lazy fine map, blockwise coarse
    matching), so that it always runs the reference stages, e.g. to trace them for export."""
    set_fast(model, False)
    model.batch_pixels = model.backbone.strip_pixels = model.coarse_matching.dense_limit = sys.maxsize
    return model


def optimize_for_inference(model: LoFTR, *, dtype: torch.dtype | None = None, channels_last: bool = True,
                           fold_bn: bool = True, lazy_fine: bool = True, dense_limit: int | None = None, block_rows: int | None = None,
                           compile: bool = False, compile_backend: str = "inductor") -> LoFTR:
    """A fused inference copy of ``model`` in eval mode (see the module docstring); ``model`` is left as it is.

    Args:
        dtype: weights dtype of the copy (``torch.bfloat16`` for the CPU bf16 mode); None keeps the model's.
        channels_last: backbone weights (and so its maps) in NHWC.
        fold_bn: fold the BatchNorms into the convolutions.
        lazy_fine: compute the fine FPN map only around the coarse matches (:mod:`.lazy_fine`).
        dense_limit: confidences with more values than this are matched blockwise (default: keep the model's).
        block_rows: rows of the similarity per block of the blockwise path (default: about 4M values per block).
        compile: ``torch.compile`` the backbone and the coarse transformer (``compile_backend``).
    """
    fused = copy.deepcopy(model).eval()
    if fold_bn:
        fold_batchnorms(fused.backbone)
    if dtype is not None:
        fused = fused.to(dtype)
    if channels_last:
        fused.backbone = fused.backbone.to(memory_format=torch.channels_last)
    set_fast(fused, True)
    fused.lazy_fine = lazy_fine
    if dense_limit is not None:
        fused.coarse_matching.dense_limit = dense_limit
    if block_rows is not None:
        fused.coarse_matching.block_rows = block_rows
    if compile:  # the lazy fine path calls the backbone's encode directly, the dense one its forward
        fused.backbone.encode = torch.compile(fused.backbone.encode, backend=compile_backend, dynamic=False)
        fused.backbone.compile(backend=compile_backend, dynamic=False)
        fused.loftr_coarse.compile(backend=compile_backend, dynamic=False)
    return fused


__all__ = ["fold_batchnorm", "fold_batchnorms", "optimize_for_inference", "set_fast", "without_shortcuts"]
