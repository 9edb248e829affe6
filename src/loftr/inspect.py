"""Seeing what the model sees: coarse feature maps before/after the Transformer, and its attention for a query.

>>> from loftr.inspect import coarse_features, attention_maps
>>> feats = coarse_features(matcher, "a.jpg", "b.jpg")          # {"backbone0": (C, Hc, Wc), ...}
>>> layers = attention_maps(matcher.model, p0, p1, (120.0, 80.0))  # one dict per coarse layer

Linear attention never forms its attention matrix; the weight it implicitly gives source token s for query l in
head h is phi(q_lh) . phi(k_sh) / sum_s' phi(q_lh) . phi(k_s'h) with phi = elu + 1 (masked tokens excluded), which
is what :func:`attention_weights` computes (softmax(q . k / sqrt(D)) for full attention). The coarse Transformer is
replayed layer by layer (:func:`trace_transformer`) in the order of ``LocalFeatureTransformer.forward``.

Also the ``loftr pca`` and ``loftr attention`` sub-commands (:func:`register`).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import LoFTRError
from .io import ImageLike, PreparedImage
from .matcher import Matcher
from .model import LoFTR
from .model.loftr import _coarse_mask
from .model.transformer import EncoderLayer, LocalFeatureTransformer, elu_feature_map

log = logging.getLogger(__name__)

__all__ = ["QueryError", "CoarseInputs", "LayerStep", "coarse_inputs", "trace_transformer", "attention_weights",
           "query_cell", "coarse_features", "attention_maps", "register"]

_FIGURE_SUFFIXES = (".pdf", ".png", ".svg")


class QueryError(LoFTRError, ValueError):
    """A query point that is not inside image0."""


@dataclass(frozen=True)
class CoarseInputs:
    """What enters the coarse Transformer for one pair (batch of 1).

    ``backbone0/1`` (1, C, Hc, Wc) backbone maps; ``tokens0/1`` (1, Hc*Wc, C) position-encoded tokens;
    ``mask0/1`` (1, Hc*Wc) bool or None; ``hw0/1`` (Hc, Wc) coarse sizes; ``valid0/1`` (rows, cols) of unpadded cells.
    """

    backbone0: torch.Tensor
    backbone1: torch.Tensor
    tokens0: torch.Tensor
    tokens1: torch.Tensor
    mask0: torch.Tensor | None
    mask1: torch.Tensor | None
    hw0: tuple[int, int]
    hw1: tuple[int, int]
    valid0: tuple[int, int]
    valid1: tuple[int, int]


@dataclass(frozen=True)
class LayerStep:
    """The inputs of image0's update in one layer: ``x`` (1, L, C) attends to ``source`` (1, S, C) with masks
    (1, L) / (1, S) or None. ``name`` is 'self' or 'cross', ``index`` the layer's position in the stack."""

    name: str
    index: int
    layer: EncoderLayer
    x: torch.Tensor
    source: torch.Tensor
    x_mask: torch.Tensor | None
    source_mask: torch.Tensor | None


def _model(model_or_matcher: LoFTR | Matcher) -> LoFTR:
    return model_or_matcher.model if isinstance(model_or_matcher, Matcher) else model_or_matcher


def _valid_cells(mask_c: torch.Tensor | None, hw: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of the unpadded top-left block of an (1, Hc, Wc) coarse mask (padding is bottom/right)."""
    if mask_c is None:
        return hw
    m = mask_c[0]
    return int(m.any(1).sum()), int(m.any(0).sum())


@torch.no_grad()
def coarse_inputs(model: LoFTR | Matcher, prepared0: PreparedImage, prepared1: PreparedImage) -> CoarseInputs:
    """Backbone maps, tokens and masks of a prepared pair, computed as :meth:`Matcher.match_prepared` and
    :meth:`LoFTR.run` do (an unpadded side gets an all-valid mask when the other side is padded)."""
    net = _model(model)
    dev = next(net.parameters()).device
    img0, img1 = prepared0.image.to(dev), prepared1.image.to(dev)
    m0 = prepared0.mask.to(dev) if prepared0.mask is not None else None
    m1 = prepared1.mask.to(dev) if prepared1.mask is not None else None
    if (m0 is None) != (m1 is None):
        m0 = m0 if m0 is not None else torch.ones(1, *img0.shape[2:], dtype=torch.bool, device=dev)
        m1 = m1 if m1 is not None else torch.ones(1, *img1.shape[2:], dtype=torch.bool, device=dev)
    stride = net.config.resolution[0]
    c0, _, c1, _ = net.extract(img0, img1)
    hw0, hw1 = tuple(c0.shape[2:]), tuple(c1.shape[2:])
    mc0, mc1 = _coarse_mask(m0, hw0, stride), _coarse_mask(m1, hw1, stride)
    t0 = net.pos_encoding(c0).flatten(2).transpose(1, 2)
    t1 = net.pos_encoding(c1).flatten(2).transpose(1, 2)
    return CoarseInputs(c0, c1, t0, t1, None if mc0 is None else mc0.flatten(1), None if mc1 is None else
                        mc1.flatten(1), hw0, hw1, _valid_cells(mc0, hw0), _valid_cells(mc1, hw1))


@torch.no_grad()
def trace_transformer(transformer: LocalFeatureTransformer, feat0: torch.Tensor, feat1: torch.Tensor,
                      mask0: torch.Tensor | None = None, mask1: torch.Tensor | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor, list[LayerStep]]:
    """Replay ``transformer`` layer by layer: feat0 (N, L, C), feat1 (N, S, C) → (out0, out1, steps).

    Same order as its forward: a 'self' layer updates both images from their pre-layer features; a 'cross' layer
    updates feat0 from feat1, then feat1 from the NEW feat0. ``steps`` holds image0's inputs of every layer.
    """
    steps = []
    for index, (layer, name) in enumerate(zip(transformer.layers, transformer.layer_names)):
        if name == "self":
            steps.append(LayerStep(name, index, layer, feat0, feat0, mask0, mask0))
            feat0, feat1 = layer(feat0, feat0, mask0, mask0), layer(feat1, feat1, mask1, mask1)
        else:
            steps.append(LayerStep(name, index, layer, feat0, feat1, mask0, mask1))
            feat0 = layer(feat0, feat1, mask0, mask1)
            feat1 = layer(feat1, feat0, mask1, mask0)
    return feat0, feat1, steps


@torch.no_grad()
def attention_weights(layer: EncoderLayer, x: torch.Tensor, source: torch.Tensor, query: int,
                      source_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(H, S) attention of token ``query`` of x (1, L, C) over the tokens of source (1, S, C), per head.

    Linear attention: phi(q) . phi(k_s) normalised over s, phi = elu + 1; full attention: softmax(q . k / sqrt(D)).
    Tokens where ``source_mask`` (1, S) is False get weight 0. Each row sums to 1.
    """
    q, k, _ = layer.project(x[:, query:query + 1], source)
    q, k = q[0, 0].double(), k[0].double()  # (H, D), (S, H, D)
    valid = None if source_mask is None else source_mask[0].bool()
    if layer.attention_type == "linear":
        scores = torch.einsum("hd,shd->hs", elu_feature_map(q), elu_feature_map(k))
        if valid is not None:
            scores = scores * valid[None]
        weights = scores / scores.sum(dim=1, keepdim=True)
    else:
        logits = torch.einsum("hd,shd->hs", q, k) / q.shape[-1] ** 0.5
        if valid is not None:
            logits = logits.masked_fill(~valid[None], float("-inf"))
        weights = torch.softmax(logits, dim=1)
    return weights.float()


def query_cell(prepared: PreparedImage, query_xy: tuple[float, float], stride: int,
               valid: tuple[int, int]) -> tuple[int, int]:
    """(col, row) of the coarse cell holding original-pixel (x, y) of an image; raises QueryError outside it.

    Original pixels → network pixels with the pixel-centre convention of :mod:`loftr.io`; cell (c, r) is centred on
    network pixel (stride*c, stride*r), so the nearest centre wins (clamped to the unpadded ``valid`` (rows, cols)).
    """
    x, y = float(query_xy[0]), float(query_xy[1])
    w, h = prepared.size
    if not (-0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5):
        raise QueryError(f"query ({x:g}, {y:g}) is outside image0, which is {w}x{h} px (x in [0, {w - 1}], "
                         f"y in [0, {h - 1}])")
    sx, sy = prepared.scale
    xn, yn = (x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5
    col = min(max(int(round(xn / stride)), 0), valid[1] - 1)
    row = min(max(int(round(yn / stride)), 0), valid[0] - 1)
    return col, row


def _crop(tokens: torch.Tensor, hw: tuple[int, int], valid: tuple[int, int]) -> torch.Tensor:
    """(1, Hc*Wc, C) tokens → (C, rows, cols) float CPU map of the unpadded cells."""
    c = tokens.shape[-1]
    return tokens[0].transpose(0, 1).reshape(c, *hw)[:, : valid[0], : valid[1]].float().cpu()


def _prepared(matcher: Matcher, image: ImageLike | PreparedImage) -> PreparedImage:
    return image if isinstance(image, PreparedImage) else matcher.prepare(image)


@torch.no_grad()
def coarse_features(matcher_or_model: Matcher | LoFTR, image0: ImageLike | PreparedImage,
                    image1: ImageLike | PreparedImage) -> dict[str, torch.Tensor]:
    """Coarse features of a pair, cropped to the unpadded cells.

    Images are paths, arrays, tensors (prepared with the matcher's resize rules; a bare model gets a default
    :class:`Matcher`'s) or :class:`PreparedImage`. Returns float CPU tensors ``backbone0``, ``backbone1`` (C, Hc, Wc)
    before the Transformer and ``transformed0``, ``transformed1`` (C, Hc, Wc) after it.
    """
    if isinstance(matcher_or_model, Matcher):
        matcher = matcher_or_model
    else:  # the model as it is (no fast copy), where it is
        matcher = Matcher(matcher_or_model, device=next(matcher_or_model.parameters()).device, fast=False)
    net = matcher.model
    p0, p1 = _prepared(matcher, image0), _prepared(matcher, image1)
    inp = coarse_inputs(net, p0, p1)
    out0, out1 = net.loftr_coarse(inp.tokens0, inp.tokens1, inp.mask0, inp.mask1)
    log.info("coarse maps %s and %s, valid cells %s and %s", inp.hw0, inp.hw1, inp.valid0, inp.valid1)
    return {
        "backbone0": _crop(inp.backbone0.flatten(2).transpose(1, 2), inp.hw0, inp.valid0),
        "backbone1": _crop(inp.backbone1.flatten(2).transpose(1, 2), inp.hw1, inp.valid1),
        "transformed0": _crop(out0, inp.hw0, inp.valid0),
        "transformed1": _crop(out1, inp.hw1, inp.valid1),
    }


@torch.no_grad()
def attention_maps(model: LoFTR | Matcher, prepared0: PreparedImage, prepared1: PreparedImage,
                   query_xy: tuple[float, float]) -> list[dict[str, Any]]:
    """Per coarse layer, the head-averaged attention of image0's query token on the layer's source tokens.

    ``query_xy`` is (x, y) in original pixels of image0 (QueryError outside it). Returns one dict per layer:
    ``name`` ('self' | 'cross'), ``layer`` (its index), ``heat0`` (Hc0, Wc0) for self layers (source image0) and
    ``heat1`` (Hc1, Wc1) for cross layers (source image1), the other None; maps cover the unpadded cells and sum
    to 1 over them.
    """
    net = _model(model)
    inp = coarse_inputs(net, prepared0, prepared1)
    col, row = query_cell(prepared0, query_xy, net.config.resolution[0], inp.valid0)
    query = row * inp.hw0[1] + col
    log.info("query %s of image0 is coarse cell (col %d, row %d), token %d", tuple(query_xy), col, row, query)
    _, _, steps = trace_transformer(net.loftr_coarse, inp.tokens0, inp.tokens1, inp.mask0, inp.mask1)
    out = []
    for step in steps:
        heat = attention_weights(step.layer, step.x, step.source, query, step.source_mask).mean(0)
        hw, valid = (inp.hw0, inp.valid0) if step.name == "self" else (inp.hw1, inp.valid1)
        heat = heat.reshape(hw)[: valid[0], : valid[1]].cpu()
        out.append({"name": step.name, "layer": step.index,
                    "heat0": heat if step.name == "self" else None,
                    "heat1": heat if step.name == "cross" else None})
    return out


# ----------------------------------------------------------------------------------------------------------- CLI
def _check_out(path: str) -> None:
    if Path(path).suffix.lower() not in _FIGURE_SUFFIXES:
        raise LoFTRError(f"--out must end in .pdf, .png or .svg, got {Path(path).name}")


def cmd_pca(args: argparse.Namespace) -> int:
    """loftr pca: PCA colourings of the coarse maps before and after the Transformer, fitted on both images."""
    from .options import matcher_from_args
    from .io import read_image
    from .viz import pca_rgb, plot_pca

    _check_out(args.out)
    images = [read_image(p) for p in (args.image0, args.image1)]
    feats = coarse_features(matcher_from_args(args), images[0], images[1])
    rows = {
        "backbone": pca_rgb(feats["backbone0"], feats["backbone1"]),
        "transformed": pca_rgb(feats["transformed0"], feats["transformed1"]),
    }
    plot_pca(images[0], images[1], rows, path=args.out)
    c, h, w = feats["backbone0"].shape
    print(f"coarse maps: {w}x{h} and {feats['backbone1'].shape[2]}x{feats['backbone1'].shape[1]} cells, "
          f"{c} channels")
    print(f"figure written to {args.out}")
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    """loftr attention: one row per coarse layer, the attention of the query of image0 on its source image."""
    from .options import matcher_from_args
    from .io import read_image
    from .viz import plot_heatmaps

    _check_out(args.out)
    images = [read_image(p) for p in (args.image0, args.image1)]
    matcher = matcher_from_args(args)
    p0, p1 = matcher.prepare(images[0]), matcher.prepare(images[1])
    layers = attention_maps(matcher.model, p0, p1, tuple(args.query))
    plot_heatmaps(images[0], images[1], [d["heat0"] for d in layers], [d["heat1"] for d in layers],
                  query=tuple(args.query), titles=[f"{d['name']} {d['layer']}" for d in layers], path=args.out)
    print(f"{len(layers)} coarse layers ({', '.join(d['name'] for d in layers)})")
    print(f"figure written to {args.out}")
    return 0


def register(sub: Any) -> None:
    """Add ``pca`` and ``attention`` to the ``loftr`` sub-commands."""
    from .options import add_model_args

    p = sub.add_parser("pca", help="PCA colours of the coarse features before and after the Transformer")
    p.add_argument("image0")
    p.add_argument("image1")
    add_model_args(p)
    p.add_argument("--out", default="pca.png", help="figure file (.pdf, .png or .svg; default pca.png)")
    p.set_defaults(func=cmd_pca)

    p = sub.add_parser("attention", help="attention of a query point of image0 in every coarse layer")
    p.add_argument("image0")
    p.add_argument("image1")
    p.add_argument("--query", nargs=2, type=float, required=True, metavar=("X", "Y"),
                   help="query point in original pixels of image0")
    add_model_args(p)
    p.add_argument("--out", default="attention.png", help="figure file (.pdf, .png or .svg; default attention.png)")
    p.set_defaults(func=cmd_attention)
