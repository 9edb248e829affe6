"""The public face: :class:`Matcher` and :func:`match` turn user images into :class:`Matches` in original pixels."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch

from .errors import LoFTRError, WeightsError
from .io import DEFAULT_MAX_SIZE, MAX_PIXELS, ImageLike, PreparedImage, prepare, to_grey, to_original
from .model import LoFTR
from .types import Matches

log = logging.getLogger(__name__)

ROTATIONS = (1, 2, 4)  # test-time rotations of image1: none, 0/180, 0/90/180/270

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto'/None → cuda, then mps, then cpu; anything else as given (an unavailable device raises)."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LoFTRError("device 'cuda' was asked for but CUDA is not available")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LoFTRError("device 'mps' was asked for but MPS is not available")
    return device


def build_model(model: str = "default", weights: str | Path | None = None, preset: str | None = None) -> LoFTR:
    """A LoFTR with weights: a registry name (``model``) or a file (``weights``, with ``preset`` or the preset of
    the file's metadata, else outdoor_ds)."""
    from .weights import load_weights, lookup, read_state_dict

    if weights is not None:
        if preset is None:
            _, meta = read_state_dict(weights)
            preset = meta.get("preset", "outdoor_ds")
        return load_weights(LoFTR(preset), weights)
    entry = lookup(model)
    if preset is not None and preset != entry.preset:
        raise WeightsError(f"weights {entry.name!r} need preset {entry.preset!r}, not {preset!r}")
    return load_weights(LoFTR(entry.preset), entry.name)


class Matcher:
    """A reusable matcher: load once, match many pairs.

    Args:
        model: registry name of the weights ("default" = the bundled model), or a ready :class:`LoFTR`.
        weights: a checkpoint file instead of a registry name; ``preset`` says which model it fits.
        resize: (W, H) to resize both images to (distorts the aspect ratio if it differs).
        max_size: longest side after resizing, aspect kept, never upscaled (default :data:`loftr.io.DEFAULT_MAX_SIZE`,
            1024; None keeps the size). A very elongated image shrinks only until its short side is one coarse cell
            (8 px).
        max_pixels: limit on the pixels of each network input (default :data:`loftr.io.MAX_PIXELS`, about 2.1 MP);
            a larger input (``max_size=None`` on a big photo, a large ``resize``) is downscaled with a logged
            warning instead of exhausting the memory. None removes the limit.
        threshold: coarse confidence threshold (default: the preset's, 0.2).
        max_std: drop matches whose fine heat map is spread wider than this, at most 20 % of a pair's (window units,
            see :func:`loftr.model.fine.sharp_matches`; default: the model's ``fine_max_std``, which a weights file
            sets: 0.95 for the bundled model, none for the official ones; 0 keeps every match).
        max_matches: keep the most confident K matches.
        device: "cpu", "cuda", "mps" or "auto"; dtype: "fp32", "fp16" or "bf16" (autocast; fp32 keeps the exact
            reference numerics).
        fast: match with an inference copy of the model (default; :func:`~loftr.model.optimize.optimize_for_inference`:
            folded BatchNorms, channels-last, fine map only around the matches, coarse matching without a confidence
            matrix): the same matches as the reference, keypoints within 1e-3 px, in about half the time and a
            fraction of the memory. ``fast=False`` matches with the plain module (the reference path, what training
            runs). With ``dtype="bf16"`` on the CPU the copy's weights are bfloat16 (no autocast); on other devices
            fp16/bf16 use autocast as without ``fast``. A model given that is already such a copy is used as it is.
        compile: also ``torch.compile`` the backbone and the coarse transformer of the fast copy (needs ``fast``).
        rotations: test-time rotation (the network is not rotation-invariant): 1 (none), 2 (image1 at 0 and 180
            degrees) or 4 (0, 90, 180, 270); the rotation with the most matches that a fundamental matrix verifies
            wins, its keypoints given back in image1's original frame. Costs one match per rotation.
        scales: test-time scale (the network is not scale-invariant: a pair whose views differ in scale by 2x or
            more matches better with the nearer view shrunk): factors below 1, e.g. ``(0.5,)``; each image in turn is
            matched shrunk by each factor (at each rotation) and, as for ``rotations``, the candidate with the most
            verified matches wins, keypoints given back in the original pixels. Costs two matches per factor, each
            cheaper than the first (a smaller image).
        search_below: search the candidates of ``rotations`` and ``scales`` only for a pair whose matches as given
            have fewer than this many verified matches (None: search every pair). A pair that matches well as given
            then costs one fundamental-matrix fit instead of the extra matches.
        two_way: each coarse match gives two correspondences, image0's cell centre refined in image1 and image1's
            refined in image0 (:meth:`LoFTR.run <loftr.model.loftr.LoFTR.run>`), so that an image's grid keypoints
            are shared by all its pairs whichever side it is on: longer tracks for SfM, twice the matches.
    """

    def __init__(self, model: str | LoFTR = "default", *, weights: str | Path | None = None, preset: str | None = None,
                 resize: tuple[int, int] | None = None, max_size: int | None = DEFAULT_MAX_SIZE,
                 threshold: float | None = None, max_std: float | None = None, max_matches: int | None = None,
                 device: str | torch.device | None = "cpu",
                 dtype: str | torch.dtype = "fp32", fast: bool = True, compile: bool = False,
                 max_pixels: int | None = MAX_PIXELS, rotations: int = 1, scales: Sequence[float] = (),
                 search_below: int | None = None, two_way: bool = False) -> None:
        _check_options(resize, max_size, threshold, max_matches, max_pixels, max_std)
        if rotations not in ROTATIONS:
            raise LoFTRError(f"rotations must be one of {', '.join(map(str, ROTATIONS))}, got {rotations}")
        if any(not (isinstance(s, (int, float)) and 0.0 < s < 1.0) for s in scales):
            raise LoFTRError(f"scales must be factors between 0 and 1 (e.g. 0.5), got {tuple(scales)}")
        if search_below is not None:
            if isinstance(search_below, bool) or not isinstance(search_below, int) or search_below < 1:
                raise LoFTRError(f"search_below must be a whole number of matches, at least 1, got {search_below!r}")
            if rotations == 1 and not scales:
                raise LoFTRError("search_below needs a test-time search to limit: give rotations or scales")
        self.rotations, self.scales, self.two_way = rotations, tuple(float(s) for s in scales), two_way
        self.search_below = search_below
        self.device = resolve_device(device)
        if isinstance(dtype, str):
            if dtype not in _DTYPES:
                raise LoFTRError(f"unknown dtype {dtype!r}; use one of fp32, fp16, bf16")
            dtype = _DTYPES[dtype]
        self.dtype = dtype
        net = model if isinstance(model, LoFTR) else build_model(model, weights, preset)
        if compile and not fast:
            raise LoFTRError("compile=True needs fast=True")
        if fast and not net.fast:  # an already optimised model (e.g. shared by match()) is used as it is
            from .model.optimize import optimize_for_inference

            cpu_bf16 = self.device.type == "cpu" and dtype == torch.bfloat16
            net = optimize_for_inference(net.to(self.device), dtype=torch.bfloat16 if cpu_bf16 else None,
                                         compile=compile)
        self.model = net.to(self.device).eval()
        self.threshold = threshold
        self.max_std = max_std
        self.resize, self.max_size, self.max_matches = resize, max_size, max_matches
        self.max_pixels = max_pixels
        self.stride = self.model.config.resolution[0]

    def prepare(self, image: ImageLike, name: str | None = None) -> PreparedImage:
        """The network input of one image (see :func:`loftr.io.prepare`); ``name`` labels an array in messages."""
        return prepare(image, resize=self.resize, max_size=self.max_size, divisor=self.stride,
                       max_pixels=self.max_pixels, name=name)

    @torch.inference_mode()
    def __call__(self, image0: ImageLike, image1: ImageLike, *, names: tuple[str, str] | None = None) -> Matches:
        """Matches of one pair, keypoints in the pixels of the ORIGINAL images, most confident first.

        Bad input raises :class:`~loftr.ImageError` naming the image: the file, else ``names`` (e.g. the files the
        arrays came from), else "image0"/"image1". Blank or uniform images give zero matches. On the CPU the result
        is deterministic (bitwise the same for the same input and settings)."""
        names = names or ("image0", "image1")
        searching = self.rotations > 1 or bool(self.scales)
        if searching:  # a file is decoded once, for the matches as given and the search's candidates
            names = tuple(str(im) if isinstance(im, (str, Path)) else n for im, n in zip((image0, image1), names))
            image0, image1 = (to_grey(im) if isinstance(im, (str, Path)) else im for im in (image0, image1))
        p0, p1 = self.prepare(image0, names[0]), self.prepare(image1, names[1])
        matches = self._to_original(self.match_prepared(p0, p1), p0, p1)
        if not searching:
            return matches
        return self._search(matches, image0, image1, p0, p1)

    def _search(self, plain: Matches, image0: ImageLike, image1: ImageLike, p0: PreparedImage,
                p1: PreparedImage) -> Matches:
        """Of the test-time candidates (image1 turned by each of the rotations; either image shrunk by each of the
        scales), the matches with the most inliers of a fundamental matrix, in the original images' pixels
        (``plain``: the matches of the pair as prepared)."""
        from .geometry import estimate_fundamental

        best, best_inliers, best_what = plain, _verified(plain, estimate_fundamental), "as given"
        if self.search_below is not None and best_inliers >= self.search_below:
            log.info("test-time search: skipped, %d verified matches as given", best_inliers)
            return plain
        grey0 = to_grey(image0) if self.scales else None
        grey1 = to_grey(image1)
        step = 4 // self.rotations
        for k in range(0, 4, step):
            turned1 = grey1 if k == 0 else torch.rot90(grey1, k, (0, 1))
            if k == 0:
                q1 = p1
            else:
                resize = self.resize if self.resize is None or k % 2 == 0 else (self.resize[1], self.resize[0])
                q1 = prepare(turned1, resize=resize, max_size=self.max_size, divisor=self.stride,
                             max_pixels=self.max_pixels, name="image1")
            candidates = [] if k == 0 else [(p0, q1, f"image1 turned by {90 * k} degrees")]
            for s in self.scales:
                for side, grey, q in ((0, grey0, p0), (1, turned1, q1)):
                    shrunk = self._shrink(grey, q, s)
                    if shrunk is not None:
                        what = f"image{side} at {s:g}x" + ("" if k == 0 else f", image1 turned by {90 * k} degrees")
                        candidates.append((shrunk, q1, what) if side == 0 else (p0, shrunk, what))
            for a, b, what in candidates:
                m = self._to_original(self.match_prepared(a, b), a, b)
                if k:
                    m = Matches(m.keypoints0, unrotate(m.keypoints1, k, b.size), m.confidence, m.batch_indexes)
                inliers = _verified(m, estimate_fundamental)
                if inliers > best_inliers:
                    best, best_inliers, best_what = m, inliers, what
        log.info("test-time search: best with %s (%d verified matches)", best_what, best_inliers)
        return best

    def _shrink(self, grey: torch.Tensor, prepared: PreparedImage, factor: float) -> PreparedImage | None:
        """``grey`` prepared at ``factor`` times the size of ``prepared`` (None when under one coarse cell)."""
        w, h = (round(v * factor) for v in prepared.resized)
        if min(w, h) < self.stride:
            return None
        return prepare(grey, resize=(w, h), divisor=self.stride, max_pixels=self.max_pixels)

    def match_prepared(self, p0: PreparedImage, p1: PreparedImage) -> Matches:
        """Matches in network-input pixels of two prepared images."""
        dev = self.device
        img0, img1 = p0.image.to(dev), p1.image.to(dev)
        m0 = p0.mask.to(dev) if p0.mask is not None else None
        m1 = p1.mask.to(dev) if p1.mask is not None else None
        if (m0 is None) != (m1 is None):  # one side padded: give the other an all-valid mask
            m0 = m0 if m0 is not None else torch.ones(img0.shape[0], *img0.shape[2:], dtype=torch.bool, device=dev)
            m1 = m1 if m1 is not None else torch.ones(img1.shape[0], *img1.shape[2:], dtype=torch.bool, device=dev)
        extra = {"two_way": True} if self.two_way else {}
        if self.dtype == torch.float32 or self.model.backbone.conv1.weight.dtype == self.dtype:
            return self.model.match(img0, img1, m0, m1, thr=self.threshold, max_std=self.max_std, **extra)
        with torch.autocast(device_type=dev.type, dtype=self.dtype):
            return self.model.match(img0, img1, m0, m1, thr=self.threshold, max_std=self.max_std, **extra)

    def _to_original(self, m: Matches, p0: PreparedImage, p1: PreparedImage) -> Matches:
        k0 = to_original(m.keypoints0.float(), p0.scale) if p0.scale != (1.0, 1.0) else m.keypoints0.float()
        k1 = to_original(m.keypoints1.float(), p1.scale) if p1.scale != (1.0, 1.0) else m.keypoints1.float()
        out = Matches(k0.cpu(), k1.cpu(), m.confidence.float().cpu(), m.batch_indexes.cpu())
        finite = out.keypoints0.isfinite().all(1) & out.keypoints1.isfinite().all(1) & out.confidence.isfinite()
        if not finite.all():  # e.g. an overflow under fp16: never hand NaN to the user
            log.warning("dropped %d matches with NaN or infinite values", int((~finite).sum()))
            out = out.select(finite)
        out = out.top_k(len(out)) if self.max_matches is None else out.top_k(self.max_matches)
        return out


def unrotate(points: torch.Tensor, k: int, size: tuple[int, int]) -> torch.Tensor:
    """(M, 2) pixel (x, y) of an image turned counter-clockwise by 90 k degrees (``torch.rot90(grey, k)``, whose
    size is ``size`` = (W, H)) → the same points in the image before turning (pixel-centre convention)."""
    w, h = size
    x, y = points[:, 0], points[:, 1]
    k %= 4
    if k == 0:
        return points.clone()
    if k == 1:  # turned[y', x'] = image[x', W0 - 1 - y'], and the turned image is W0 = h rows high
        return torch.stack([h - 1 - y, x], 1)
    if k == 2:
        return torch.stack([w - 1 - x, h - 1 - y], 1)
    return torch.stack([y, w - 1 - x], 1)  # turned[y', x'] = image[H0 - 1 - x', y'], H0 = w


def _verified(matches: Matches, estimate) -> int:
    """How many matches a fundamental matrix (MAGSAC, 1 px) keeps; 0 when none can be fitted."""
    fit = estimate(matches.keypoints0.numpy(), matches.keypoints1.numpy())
    return 0 if fit is None else int(fit.inliers.sum())


def _check_options(resize: tuple[int, int] | None, max_size: int | None, threshold: float | None,
                   max_matches: int | None, max_pixels: int | None, max_std: float | None = None) -> None:
    """Refuse options that cannot work, each with one line saying what is expected."""
    if resize is not None and (len(resize) != 2 or min(int(v) for v in resize) < 8):
        raise LoFTRError(f"resize must be (W, H) with both sides at least 8 px, got {tuple(resize)}")
    if max_size is not None and max_size < 8:
        raise LoFTRError(f"max_size must be at least 8 px (one coarse cell), got {max_size}")
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise LoFTRError(f"threshold must lie in [0, 1], got {threshold}")
    if max_matches is not None and max_matches < 0:
        raise LoFTRError(f"max_matches must not be negative, got {max_matches}")
    if max_pixels is not None and max_pixels < 64:
        raise LoFTRError(f"max_pixels must be at least 64 (one coarse cell), got {max_pixels}")
    if max_std is not None and not max_std >= 0:
        raise LoFTRError(f"max_std must be 0 (keep every match) or positive, got {max_std}")


@lru_cache(maxsize=4)
def _cached_matcher(model: str, weights: str | None, preset: str | None, device: str, fast: bool = True,
                    dtype: str = "fp32") -> Matcher:
    return Matcher(model, weights=weights, preset=preset, device=device, fast=fast, dtype=dtype)


def match(image0: ImageLike, image1: ImageLike, model: str = "default", *, weights: str | Path | None = None,
          preset: str | None = None, resize: tuple[int, int] | None = None, max_size: int | None = DEFAULT_MAX_SIZE,
          threshold: float | None = None, max_std: float | None = None, max_matches: int | None = None,
          device: str = "cpu", dtype: str = "fp32", fast: bool = True, max_pixels: int | None = MAX_PIXELS,
          rotations: int = 1, scales: Sequence[float] = (), search_below: int | None = None) -> Matches:
    """Match two images (paths, arrays or tensors) → :class:`Matches` in original pixels, most confident first.

    The model is loaded once per (model, weights, preset, device) and reused by later calls; the fast inference
    copy (the default, see :class:`Matcher`; ``fast=False`` for the reference module) is cached per dtype too.
    """
    base = _cached_matcher(model, str(weights) if weights else None, preset, str(device), fast,
                           dtype if fast else "fp32")
    m = Matcher(base.model, resize=resize, max_size=max_size, threshold=threshold, max_std=max_std,
                max_matches=max_matches, device=device, dtype=dtype, fast=fast, max_pixels=max_pixels,
                rotations=rotations, scales=scales, search_below=search_below)
    return m(image0, image1)


__all__ = ["Matcher", "match", "build_model", "resolve_device", "unrotate"]
