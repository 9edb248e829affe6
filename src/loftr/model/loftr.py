"""The LoFTR module: backbone → positional encoding → coarse Transformer → coarse matching → fine refinement."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import LoFTRConfig, get_preset
from ..types import Matches
from .backbone import ResNetFPN
from .coarse import CoarseMatches, CoarseMatching
from .fine import FinePreprocess, sharp_matches, spatial_expectation
from .lazy_fine import LazyFineMap
from .position import PositionEncodingSine
from .transformer import LocalFeatureTransformer

BATCH_PIXELS = 1 << 20  # fast inference runs the backbone on one image at a time above this many pixels per pass


@dataclass(frozen=True)
class LoFTROutput:
    """Matches plus what training, visualisation and evaluation need.

    ``matches`` are in the pixels of the network input; ``coarse`` indexes cells of the flattened coarse maps of
    sizes ``hw0_c`` / ``hw1_c``; ``conf_matrix`` (N, L, S), None where dual-softmax inference ran without it (the fast
    copy, and large inputs: see :class:`~loftr.model.coarse.CoarseMatching`); ``expec_f`` (M', 3) fine expectation
    (x, y, std) for the coarse selections (which during training include ground-truth pads); ``feat_c0/1`` transformed coarse tokens;
    ``conf_matrix_with_bin`` (N, L+1, S+1) the optimal-transport assignment with its dustbin row and column, kept in
    training mode only (for the sparse loss; None otherwise and for dual-softmax).
    """

    matches: Matches
    coarse: CoarseMatches
    conf_matrix: torch.Tensor | None
    expec_f: torch.Tensor
    hw0_c: tuple[int, int]
    hw1_c: tuple[int, int]
    feat_c0: torch.Tensor
    feat_c1: torch.Tensor
    conf_matrix_with_bin: torch.Tensor | None = None


def _coarse_mask(mask: torch.Tensor | None, hw_c: tuple[int, int], stride: int) -> torch.Tensor | None:
    """(N, H, W) image-resolution or (N, Hc, Wc) coarse mask → (N, Hc, Wc) bool; a cell takes its top-left pixel."""
    if mask is None:
        return None
    if tuple(mask.shape[-2:]) != tuple(hw_c):
        mask = mask[..., ::stride, ::stride]
    if tuple(mask.shape[-2:]) != tuple(hw_c):
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit a coarse map of {tuple(hw_c)}")
    return mask.bool()


def _as_layout(image: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """The image with NHWC strides when ``channels_last``. A one-channel image is contiguous in both layouts, and
    only explicit NHWC strides make the first convolution choose (and output) NHWC, several times faster."""
    if not channels_last:
        return image.contiguous()
    image = image.contiguous(memory_format=torch.channels_last)
    n, c, h, w = image.shape
    return image.as_strided(image.shape, (c * h * w, 1, w * c, c)) if c == 1 else image


class LoFTR(nn.Module):
    """LoFTR (Sun et al., CVPR 2021), parameter-for-parameter compatible with the official checkpoints.

    The bare network, randomly initialised, in eval mode: :class:`loftr.LoFTR` (defined in :mod:`loftr.weights`,
    which imports this module, never the other way) is the same network with a ``weights`` argument, and
    :func:`loftr.weights.load_weights` loads a checkpoint into any instance.

    Args:
        preset: name of a preset in :data:`loftr.config.PRESETS` (ignored when ``config`` is given).
        weights: must be None here (see above).
        config: an explicit :class:`LoFTRConfig`.

    Call it like kornia's LoFTR: ``model({"image0": (N,1,H,W), "image1": ..., "mask0"?, "mask1"?})`` returns a dict
    with ``keypoints0``, ``keypoints1`` (M, 2), ``confidence`` (M,), ``batch_indexes`` (M,). Or use :meth:`match`
    for a typed :class:`Matches`, and :meth:`run` for the intermediates.
    """

    def __init__(self, preset: str = "outdoor_ds", weights: str | Path | None = None,
                 config: LoFTRConfig | None = None) -> None:
        super().__init__()
        self.preset = preset if config is None else None
        self.config = config if config is not None else get_preset(preset)
        cfg = self.config
        self.backbone = ResNetFPN(cfg.backbone)
        self.pos_encoding = PositionEncodingSine(cfg.coarse.d_model, temp_bug_fix=cfg.temp_bug_fix)
        self.loftr_coarse = LocalFeatureTransformer(cfg.coarse)
        self.coarse_matching = CoarseMatching(cfg.match_coarse)
        self.fine_preprocess = FinePreprocess(
            cfg.coarse.d_model, cfg.fine.d_model, cfg.fine_window_size, cfg.fine_concat_coarse_feat
        )
        self.loftr_fine = LocalFeatureTransformer(cfg.fine)
        self.fast = False  # inference shortcuts: see loftr.model.optimize
        self.lazy_fine = True  # inference (fast, or plain on large images): fine map only around the coarse matches
        self.batch_pixels = BATCH_PIXELS
        self.backbone_autocast: torch.dtype | None = None  # training: run the backbone (only) under this autocast
        self.eval()
        if weights is not None:  # the model package knows no files
            raise TypeError("loftr.model.LoFTR is the bare network: load weights with loftr.LoFTR(preset, "
                            "weights=...) or loftr.weights.load_weights(model, weights)")

    # -- stages -------------------------------------------------------------------------------------------------
    def fast_inference(self) -> bool:
        """True when the inference shortcuts apply: ``fast`` set, eval mode, autograd off."""
        return self.fast and not self.training and not torch.is_grad_enabled()

    def extract(self, image0: torch.Tensor, image1: torch.Tensor) -> tuple[Any, ...]:
        """Backbone maps of both images: coarse0, fine0, coarse1, fine1 (one pass when the sizes agree).

        Fast inference casts the images to the weights' dtype and memory format, runs large images one at a time
        (more than ``batch_pixels`` pixels together), and with ``lazy_fine`` returns :class:`LazyFineMap` fine maps.
        The plain module does the same at inference (eval mode, autograd off) for large images only, so that a
        kornia-style ``model.eval()`` under ``torch.inference_mode()`` has the memory bound too; training mode and
        small images take the reference path.
        """
        inference = not self.training and not torch.is_grad_enabled()
        large = image0.numel() + image1.numel() > self.batch_pixels
        if self.backbone_autocast is not None or not (self.fast_inference() or (inference and large)):
            if self.backbone_autocast is not None:  # low-precision convolutions, float32 maps for everything after
                with torch.autocast(image0.device.type, dtype=self.backbone_autocast):
                    maps = self._extract_reference(image0, image1)
                return tuple(t.float() for t in maps)
            return self._extract_reference(image0, image1)
        if not self.fast:  # the plain module at inference on large images: the same maps in bounded memory
            return (*self._backbone_fast(image0), *self._backbone_fast(image1))
        weight = self.backbone.conv1.weight
        nhwc = weight.is_contiguous(memory_format=torch.channels_last)
        image0, image1 = (_as_layout(im.to(weight.dtype), nhwc) for im in (image0, image1))
        if image0.shape != image1.shape or image0.numel() + image1.numel() > self.batch_pixels:
            return (*self._backbone_fast(image0), *self._backbone_fast(image1))
        n = image0.shape[0]
        coarse, fine = self._backbone_fast(torch.cat([image0, image1], 0))
        if isinstance(fine, LazyFineMap):
            return coarse[:n], fine.select(0, n), coarse[n:], fine.select(n, 2 * n)
        return coarse[:n], fine[:n], coarse[n:], fine[n:]

    def _extract_reference(self, image0: torch.Tensor, image1: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if image0.shape == image1.shape:
            n = image0.shape[0]
            coarse, fine = self.backbone(torch.cat([image0, image1], 0))
            return coarse[:n], fine[:n], coarse[n:], fine[n:]
        return (*self.backbone(image0), *self.backbone(image1))

    def _backbone_fast(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | LazyFineMap]:
        if not self.lazy_fine:
            return self.backbone(image)
        stages = self.backbone.encode(image)
        coarse = self.backbone.coarse_map(stages)
        return coarse, LazyFineMap(self.backbone, stages, coarse)

    def transform_coarse(self, coarse0: torch.Tensor, coarse1: torch.Tensor, mask_c0: torch.Tensor | None = None,
                         mask_c1: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone coarse maps (N, C, Hc, Wc) → position-encoded, transformed tokens (N, Hc*Wc, C)."""
        t0 = self.pos_encoding(coarse0).flatten(2).transpose(1, 2)
        t1 = self.pos_encoding(coarse1).flatten(2).transpose(1, 2)
        m0 = mask_c0.flatten(1) if mask_c0 is not None else None
        m1 = mask_c1.flatten(1) if mask_c1 is not None else None
        return self.loftr_coarse(t0, t1, m0, m1)

    def run(self, image0: torch.Tensor, image1: torch.Tensor, mask0: torch.Tensor | None = None,
            mask1: torch.Tensor | None = None, *, thr: float | None = None, max_std: float | None = None,
            supervision: Any | None = None, two_way: bool = False) -> LoFTROutput:
        """The whole pipeline. images (N, 1, H, W) in [0, 1]; masks (N, H, W) or (N, Hc, Wc), 1 = valid pixel.

        ``thr`` / ``max_std`` replace the config's coarse threshold / ``fine_max_std`` (``max_std`` 0 or inf: keep
        every match). ``expec_f`` and ``coarse`` keep the matches that ``max_std`` drops from ``matches``.

        ``supervision`` (training only): an object with ``b_ids``, ``i_ids``, ``j_ids`` of ground-truth coarse
        matches, used to pad the coarse selections as the reference does (see :func:`pad_with_ground_truth`).

        ``two_way``: each coarse match also gives the reverse correspondence, image1's cell centre refined inside
        image0's window (the same fine windows, one more expectation): ``matches`` holds the M forward matches, then
        the reverse ones. Every keypoint of an image's coarse grid is then shared by all the pairs it matches in,
        whichever side the image is on, which is what many-view tracks need (``loftr sfm``).
        """
        cfg = self.config
        stride_c, stride_f = cfg.resolution
        coarse0, fine0, coarse1, fine1 = self.extract(image0, image1)
        hw0_c, hw1_c = tuple(coarse0.shape[2:]), tuple(coarse1.shape[2:])
        mask_c0, mask_c1 = _coarse_mask(mask0, hw0_c, stride_c), _coarse_mask(mask1, hw1_c, stride_c)
        feat_c0, feat_c1 = self.transform_coarse(coarse0, coarse1, mask_c0, mask_c1)
        if self.training and cfg.match_coarse.match_type == "sinkhorn":  # the sparse loss needs the dustbins
            conf, conf_bin, selected = self.coarse_matching.forward_with_bin(feat_c0, feat_c1, hw0_c, hw1_c, mask_c0,
                                                                             mask_c1, thr=thr)
        else:
            conf, selected = self.coarse_matching(feat_c0, feat_c1, hw0_c, hw1_c, mask_c0, mask_c1, thr=thr)
            conf_bin = None
        if supervision is not None:
            conf_shape = torch.Size((feat_c0.shape[0], feat_c0.shape[1], feat_c1.shape[1]))
            selected = pad_with_ground_truth(selected, supervision, conf_shape, mask_c0, mask_c1,
                                             cfg.match_coarse.train_coarse_percent,
                                             cfg.match_coarse.train_pad_num_gt_min)
        b, i, j = selected.b_ids, selected.i_ids, selected.j_ids
        win0, win1 = self.fine_preprocess(fine0, fine1, feat_c0, feat_c1, b, i, j, hw0_c[1], hw1_c[1],
                                          stride_c // stride_f)
        if b.numel() > 0:
            win0, win1 = self.loftr_fine(win0, win1)
        expec_f = self._expectation(win0, win1, selected.mconf.dtype)
        coord = torch.promote_types(selected.mconf.dtype, torch.float32)
        grid0 = torch.stack([i % hw0_c[1], i // hw0_c[1]], 1).to(coord) * stride_c
        grid1 = torch.stack([j % hw1_c[1], j // hw1_c[1]], 1).to(coord) * stride_c
        offset = (cfg.fine_window_size // 2) * stride_f  # window units → input pixels
        real = selected.mconf != 0  # ground-truth pads carry confidence 0
        limit = cfg.fine_max_std if max_std is None else max_std
        keep = torch.zeros_like(real)  # real matches, less those whose fine heat map is flat (the filter's setting)
        keep[real] = sharp_matches(expec_f[real, 2], b[real], limit)
        kpts1 = grid1 + expec_f[:, :2].detach().to(coord) * offset
        parts = [(grid0[keep], kpts1[keep], selected.mconf[keep], b[keep])]
        if two_way:  # image1's cell centre refined in image0's window, filtered by its own spread
            expec_b = self._expectation(win1, win0, selected.mconf.dtype)
            back = torch.zeros_like(real)
            back[real] = sharp_matches(expec_b[real, 2], b[real], limit)
            kpts0 = grid0 + expec_b[:, :2].detach().to(coord) * offset
            parts.append((kpts0[back], grid1[back], selected.mconf[back], b[back]))
        matches = Matches(*(torch.cat(t) for t in zip(*parts)))
        return LoFTROutput(matches, selected, conf, expec_f, hw0_c, hw1_c, feat_c0, feat_c1, conf_bin)

    def _expectation(self, win0: torch.Tensor, win1: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """:func:`spatial_expectation` of window0's centre in window1; fast inference computes it in at least float32
        (``dtype``, the confidences'), whatever the weights or autocast."""
        if self.fast_inference():
            with torch.autocast(win0.device.type, enabled=False):
                return spatial_expectation(win0.to(dtype), win1.to(dtype))
        return spatial_expectation(win0, win1)

    def match(self, image0: torch.Tensor, image1: torch.Tensor, mask0: torch.Tensor | None = None,
              mask1: torch.Tensor | None = None, thr: float | None = None, max_std: float | None = None,
              two_way: bool = False) -> Matches:
        """Matches of (N, 1, H, W) images in input pixels; see :meth:`run`."""
        return self.run(image0, image1, mask0, mask1, thr=thr, max_std=max_std, two_way=two_way).matches

    def forward(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """kornia-compatible call: a dict with image0, image1 (and optional mask0, mask1) → a NEW dict of matches."""
        for key in ("image0", "image1"):
            if key not in data:
                raise KeyError(f"LoFTR input needs {key!r} of shape (N, 1, H, W)")
        return self.match(data["image0"], data["image1"], data.get("mask0"), data.get("mask1")).to_dict()


def pad_with_ground_truth(selected: CoarseMatches, supervision: Any, conf_shape: torch.Size,
                          mask_c0: torch.Tensor | None, mask_c1: torch.Tensor | None, coarse_percent: float,
                          pad_num_gt_min: int) -> CoarseMatches:
    """Training-time coarse selections as in the reference: a random subset of predictions plus random ground-truth
    matches (confidence 0), so the fine stage always has work and a bounded amount of it.
    """
    device = selected.b_ids.device
    n, l, s = conf_shape
    if mask_c0 is None:
        max_candidates = n * max(l, s)
    else:
        cells0 = mask_c0.flatten(1).sum(1)
        cells1 = mask_c1.flatten(1).sum(1) if mask_c1 is not None else torch.full_like(cells0, s)
        max_candidates = int(torch.minimum(cells0, cells1).sum())
    num_train = int(max_candidates * coarse_percent)
    num_pred = selected.b_ids.numel()
    if pad_num_gt_min >= num_train:
        raise ValueError(f"train_pad_num_gt_min ({pad_num_gt_min}) must be below the training matches ({num_train})")
    if num_pred <= num_train - pad_num_gt_min:
        pred_idx = torch.arange(num_pred, device=device)
    else:
        pred_idx = torch.randint(num_pred, (num_train - pad_num_gt_min,), device=device)
    num_gt = supervision.b_ids.numel()
    if num_gt == 0:
        return CoarseMatches(*(t[pred_idx] for t in (selected.b_ids, selected.i_ids, selected.j_ids, selected.mconf)))
    gt_idx = torch.randint(num_gt, (max(num_train - num_pred, pad_num_gt_min),), device=device)
    zeros = selected.mconf.new_zeros(gt_idx.shape[0])
    return CoarseMatches(
        torch.cat([selected.b_ids[pred_idx], supervision.b_ids[gt_idx]]),
        torch.cat([selected.i_ids[pred_idx], supervision.i_ids[gt_idx]]),
        torch.cat([selected.j_ids[pred_idx], supervision.j_ids[gt_idx]]),
        torch.cat([selected.mconf[pred_idx], zeros]),
    )
