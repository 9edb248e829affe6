"""ONNX export of LoFTR in two graphs, and a runner that matches with onnxruntime.

LoFTR's coarse selection is data dependent (threshold, mutual nearest neighbours, a variable number of matches), so
it stays outside the graphs, in torch, with the selection functions the eager model uses:

- ``OUT.onnx`` (coarse): image0, image1 (1, 1, H, W) float in [0, 1], mask0, mask1 (1, H, W) bool (valid pixels)
  → conf (1, L, S) confidence matrix, feat_c0 (1, L, C), feat_c1 (1, S, C) transformed coarse tokens, feat_f0,
  feat_f1 (1, Cf, Hf, Wf) fine maps.
- ``OUT.fine.onnx`` (fine): feat_f0, feat_f1, feat_c0, feat_c1, i_ids, j_ids (M,) int64 coarse cells of the
  selected matches → expec_f (M, 3) sub-pixel offset (x, y in [-1, 1] window units) and spread.

Both graphs carry metadata (preset, strides, window, threshold, border, fine_max_std) that :class:`OnnxMatcher`
reads. Sizes are fixed at export (``height``/``width``, multiples of the coarse stride) or dynamic (``dynamic=True``;
up to 2048 px a side, the positional table's extent).
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..io import DEFAULT_MAX_SIZE, ImageLike, prepare, to_original
from ..types import Matches
from . import PipelineError, require

if TYPE_CHECKING:
    from ..model import LoFTR

log = logging.getLogger(__name__)

OPSET = 17


class CoarseGraph(nn.Module):
    """Backbone, positional encoding, coarse transformer and confidence matrix of one pair (batch 1)."""

    def __init__(self, model: "LoFTR") -> None:
        super().__init__()
        self.model = model
        self.stride = model.config.resolution[0]

    def forward(self, image0: torch.Tensor, image1: torch.Tensor, mask0: torch.Tensor,
                mask1: torch.Tensor) -> tuple[torch.Tensor, ...]:
        coarse0, fine0, coarse1, fine1 = self.model.extract(image0, image1)
        s = self.stride
        m0, m1 = mask0[:, ::s, ::s], mask1[:, ::s, ::s]
        feat0, feat1 = self.model.transform_coarse(coarse0, coarse1, m0, m1)
        conf = self.model.coarse_matching.confidence(feat0, feat1, m0.flatten(1), m1.flatten(1))
        return conf, feat0, feat1, fine0, fine1


class FineGraph(nn.Module):
    """Fine windows around given coarse matches, fine transformer and the sub-pixel expectation (batch 1)."""

    def __init__(self, model: "LoFTR") -> None:
        super().__init__()
        self.model = model
        self.ratio = model.config.resolution[0] // model.config.resolution[1]
        w = model.config.fine_window_size
        axis = torch.linspace(-1, 1, w)
        gy, gx = torch.meshgrid(axis, axis, indexing="ij")
        self.register_buffer("grid", torch.stack([gx.reshape(-1), gy.reshape(-1)], -1), persistent=False)

    def forward(self, feat_f0: torch.Tensor, feat_f1: torch.Tensor, feat_c0: torch.Tensor, feat_c1: torch.Tensor,
                i_ids: torch.Tensor, j_ids: torch.Tensor) -> torch.Tensor:
        b_ids = torch.zeros_like(i_ids)
        w0, w1 = feat_f0.shape[3] // self.ratio, feat_f1.shape[3] // self.ratio
        win0, win1 = self.model.fine_preprocess(feat_f0, feat_f1, feat_c0, feat_c1, b_ids, i_ids, j_ids, w0, w1,
                                                self.ratio)
        win0, win1 = self.model.loftr_fine(win0, win1)
        return self.expectation(win0, win1)

    def expectation(self, win0: torch.Tensor, win1: torch.Tensor) -> torch.Tensor:
        """(M, w*w, C) windows → (M, 3): loftr.model.fine.spatial_expectation with the window size fixed at export
        (tracing cannot take the square root of a traced size). The ONNX tests check it against the eager model."""
        c = self.model.config.fine.d_model
        centre = win0[:, self.grid.shape[0] // 2, :]
        heat = torch.softmax(torch.einsum("mc,mrc->mr", centre, win1) / c**0.5, dim=1)
        mean = heat @ self.grid
        std = (heat @ self.grid**2 - mean**2).clamp(min=1e-10).sqrt().sum(-1)
        return torch.cat([mean, std[:, None]], -1)


def fine_path(path: str | Path) -> Path:
    """The fine graph's file beside the coarse one: OUT.onnx → OUT.fine.onnx."""
    path = Path(path)
    return path.with_name(path.stem + ".fine.onnx")


def _metadata(model: "LoFTR", dynamic: bool) -> dict[str, str]:
    cfg = model.config
    return {"loftr_preset": str(model.preset), "stride_coarse": str(cfg.resolution[0]),
            "stride_fine": str(cfg.resolution[1]), "window": str(cfg.fine_window_size),
            "threshold": str(cfg.match_coarse.thr), "border_rm": str(cfg.match_coarse.border_rm),
            "max_std": json.dumps(cfg.fine_max_std), "dynamic": json.dumps(dynamic)}


def _add_metadata(path: Path, meta: dict[str, str]) -> None:
    onnx = require("onnx", "onnx", "ONNX export")
    proto = onnx.load(str(path))
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(path))


def export_onnx(model: "LoFTR", path: str | Path, *, height: int | None = 480, width: int | None = 640,
                dynamic: bool = False, opset: int = OPSET) -> tuple[Path, Path]:
    """Write the coarse graph to ``path`` and the fine graph to :func:`fine_path`; returns both paths."""
    require("onnx", "onnx", "ONNX export")
    stride = model.config.resolution[0]
    if dynamic:
        height, width = 8 * stride, 10 * stride
    if height is None or width is None or height % stride or width % stride or min(height, width) < 4 * stride:
        raise PipelineError(f"--height and --width must be multiples of {stride} and at least {4 * stride} px, "
                            f"got {height}x{width}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..model.optimize import without_shortcuts

    model = without_shortcuts(copy.deepcopy(model)).eval().float()  # the plain stages, also of a fast copy
    coarse, fine = CoarseGraph(model).eval(), FineGraph(model).eval()
    h1, w1 = (height + stride, width - stride) if dynamic else (height, width)  # dynamic: trace distinct sizes
    img0, img1 = torch.rand(1, 1, height, width), torch.rand(1, 1, h1, w1)
    msk0, msk1 = torch.ones(1, height, width, dtype=torch.bool), torch.ones(1, h1, w1, dtype=torch.bool)
    axes = {}
    if dynamic:
        axes = {"image0": {2: "H0", 3: "W0"}, "image1": {2: "H1", 3: "W1"}, "mask0": {1: "H0", 2: "W0"},
                "mask1": {1: "H1", 2: "W1"}, "conf": {1: "L", 2: "S"}, "feat_c0": {1: "L"}, "feat_c1": {1: "S"},
                "feat_f0": {2: "Hf0", 3: "Wf0"}, "feat_f1": {2: "Hf1", 3: "Wf1"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on Python-level shape checks, which hold for these graphs
        outs = coarse(img0, img1, msk0, msk1)
        torch.onnx.export(coarse, (img0, img1, msk0, msk1), str(path), dynamo=False, opset_version=opset,
                          input_names=["image0", "image1", "mask0", "mask1"],
                          output_names=["conf", "feat_c0", "feat_c1", "feat_f0", "feat_f1"], dynamic_axes=axes)
        _, fc0, fc1, ff0, ff1 = outs
        n = min(fc0.shape[1], fc1.shape[1])
        ids = torch.arange(0, n, max(n // 16, 1))
        fine_axes = {"i_ids": {0: "M"}, "j_ids": {0: "M"}, "expec_f": {0: "M"}}
        if dynamic:
            fine_axes.update({"feat_f0": {2: "Hf0", 3: "Wf0"}, "feat_f1": {2: "Hf1", 3: "Wf1"},
                              "feat_c0": {1: "L"}, "feat_c1": {1: "S"}})
        torch.onnx.export(fine, (ff0, ff1, fc0, fc1, ids, ids.flip(0)), str(fine_path(path)), dynamo=False,
                          opset_version=opset, input_names=["feat_f0", "feat_f1", "feat_c0", "feat_c1", "i_ids",
                                                            "j_ids"],
                          output_names=["expec_f"], dynamic_axes=fine_axes)
    meta = _metadata(model, dynamic)
    meta.update({"height": str(height), "width": str(width)})
    for p in (path, fine_path(path)):
        _add_metadata(p, meta)
    log.info("exported %s and %s", path, fine_path(path))
    return path, fine_path(path)


@dataclass(frozen=True)
class OnnxSettings:
    """What the runner needs from the graphs' metadata."""

    stride: int
    stride_fine: int
    window: int
    threshold: float
    border: int
    size: tuple[int, int] | None  # (W, H) of a fixed-size export, None when dynamic
    max_std: float | None = None  # the model's fine_max_std (None or 0: keep every match)


class OnnxMatcher:
    """Match with the exported graphs on onnxruntime; coarse selection in torch with the eager model's functions.

    Images are prepared as :class:`loftr.Matcher` does (grey, resized, padded with masks); a fixed-size export
    resizes both images to its (W, H). Returns :class:`Matches` in original pixels, most confident first.
    """

    def __init__(self, path: str | Path, *, max_size: int | None = DEFAULT_MAX_SIZE, threshold: float | None = None,
                 max_std: float | None = None, providers: tuple[str, ...] = ("CPUExecutionProvider",),
                 threads: int | None = None) -> None:
        ort = require("onnxruntime", "onnxruntime", "running ONNX models")
        path = Path(path)
        for p in (path, fine_path(path)):
            if not p.is_file():
                raise PipelineError(f"ONNX file {p} does not exist (export with `loftr export onnx`)")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = opts.inter_op_num_threads = int(threads)
        self.coarse = ort.InferenceSession(str(path), opts, providers=list(providers))
        self.fine = ort.InferenceSession(str(fine_path(path)), opts, providers=list(providers))
        meta = self.coarse.get_modelmeta().custom_metadata_map
        dynamic = json.loads(meta["dynamic"])
        self.settings = OnnxSettings(int(meta["stride_coarse"]), int(meta["stride_fine"]), int(meta["window"]),
                                     float(meta["threshold"]) if threshold is None else float(threshold),
                                     int(meta["border_rm"]),
                                     None if dynamic else (int(meta["width"]), int(meta["height"])),
                                     json.loads(meta.get("max_std", "null")) if max_std is None else max_std)
        self.max_size = max_size

    def __call__(self, image0: ImageLike, image1: ImageLike) -> Matches:
        from ..model.coarse import select_matches, valid_cells
        from ..model.fine import sharp_matches

        st = self.settings
        p0, p1 = (prepare(im, resize=st.size, max_size=None if st.size else self.max_size, divisor=st.stride)
                  for im in (image0, image1))
        feeds = {"image0": p0.image.numpy(), "image1": p1.image.numpy(),
                 "mask0": _mask(p0).numpy(), "mask1": _mask(p1).numpy()}
        conf, fc0, fc1, ff0, ff1 = self.coarse.run(None, feeds)
        hw0 = (p0.image.shape[2] // st.stride, p0.image.shape[3] // st.stride)
        hw1 = (p1.image.shape[2] // st.stride, p1.image.shape[3] // st.stride)
        mc0 = _mask(p0)[:, ::st.stride, ::st.stride]
        mc1 = _mask(p1)[:, ::st.stride, ::st.stride]
        valid0 = valid_cells(hw0, st.border, mc0, 1, torch.device("cpu"))
        valid1 = valid_cells(hw1, st.border, mc1, 1, torch.device("cpu"))
        sel = select_matches(torch.from_numpy(conf), st.threshold, valid0, valid1)
        i, j = sel.i_ids, sel.j_ids
        if i.numel():
            expec = torch.from_numpy(self.fine.run(None, {"feat_f0": ff0, "feat_f1": ff1, "feat_c0": fc0,
                                                          "feat_c1": fc1, "i_ids": i.numpy(), "j_ids": j.numpy()})[0])
        else:
            expec = torch.zeros(0, 3)
        keep = sharp_matches(expec[:, 2], torch.zeros_like(i), st.max_std)  # as LoFTR.run: drop flat fine heat maps
        i, j, expec, mconf = i[keep], j[keep], expec[keep], sel.mconf[keep]
        k0 = torch.stack([i % hw0[1], i // hw0[1]], 1).float() * st.stride
        k1 = torch.stack([j % hw1[1], j // hw1[1]], 1).float() * st.stride
        k1 = k1 + expec[:, :2] * (st.window // 2) * st.stride_fine
        k0 = to_original(k0, p0.scale) if p0.scale != (1.0, 1.0) else k0
        k1 = to_original(k1, p1.scale) if p1.scale != (1.0, 1.0) else k1
        order = torch.argsort(mconf, descending=True, stable=True)
        return Matches(k0[order], k1[order], mconf[order].float(), torch.zeros(len(order), dtype=torch.long))


def compare_matches(eager: Matches, other: Matches, tol: float = 1e-3) -> dict[str, float]:
    """Agreement of two match sets of one pair: counts, matches in common (a keypoint0 of ``eager`` found in
    ``other`` within ``tol`` px; keypoint0s sit on the coarse grid), the share of ``eager`` they are, and over them
    the largest keypoint1 distance (px) and confidence difference."""
    a0, b0 = eager.keypoints0.double(), other.keypoints0.double()
    common = 0
    d_kpt, d_conf = 0.0, 0.0
    if len(a0) and len(b0):
        dist = torch.cdist(a0, b0)
        near, idx = dist.min(1)
        hit = near <= tol
        common = int(hit.sum())
        if common:
            d_kpt = float((eager.keypoints1[hit].double() - other.keypoints1[idx[hit]].double()).norm(dim=1).max())
            d_conf = float((eager.confidence[hit].double() - other.confidence[idx[hit]].double()).abs().max())
    return {"eager": len(eager), "other": len(other), "common": common,
            "recall": common / max(len(eager), 1), "max_kpt1_diff_px": d_kpt, "max_conf_diff": d_conf}


def _mask(p) -> torch.Tensor:
    """(1, Hp, Wp) bool mask of valid pixels of a prepared image (all valid when it was not padded)."""
    return p.mask if p.mask is not None else torch.ones(1, *p.image.shape[2:], dtype=torch.bool)


__all__ = ["export_onnx", "OnnxMatcher", "compare_matches", "CoarseGraph", "FineGraph", "fine_path", "OnnxSettings"]
