"""Each benchmark end to end on tiny generated data: SIFT must do well (lower bounds), a random-weight tiny LoFTR
and a matcher that finds nothing must simply run and give well-formed results."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from loftr.eval import homography, middlebury, pose, synthetic, wxbs
from loftr.eval.baselines import ORBMatcher, PairMatches, SIFTMatcher
from loftr.eval.report import BenchmarkResult

from .datasets import write_hpatches, write_megadepth, write_middlebury, write_scannet, write_wxbs
from .scenes import texture


class NoMatches:
    name = "nothing"

    def __call__(self, image0, image1) -> PairMatches:
        return PairMatches.empty()


@pytest.fixture
def matchers(tiny_loftr):
    return [SIFTMatcher(), ORBMatcher(), tiny_loftr, NoMatches()]


def check_well_formed(result: BenchmarkResult, n_pairs: int, methods: list[str]) -> None:
    assert [r.method for r in result.rows if r.split == "all"] == methods
    for r in result.rows:
        for c in result.columns:
            v = r.metrics[c.key]
            assert math.isfinite(v) and v >= 0 and (c.kind != "percent" or v <= 1), (r.method, c.key, v)
    for method in methods:
        arrays = result.per_pair[method]
        assert all(len(v) == n_pairs for v in arrays.values())
    nothing = result.row("nothing")
    assert nothing.metrics["matches"] == 0
    assert all(nothing.metrics[c.key] == 0 for c in result.columns if c.kind == "percent")


METHODS = ["SIFT", "ORB", "LoFTR (random)", "nothing"]


@pytest.mark.parametrize("dataset", ["scannet", "megadepth"])
def test_pose_benchmark(tmp_path: Path, matchers, dataset: str) -> None:
    cv2.setRNGSeed(0)
    if dataset == "scannet":
        index, _ = write_scannet(tmp_path)
        loaded = pose.read_scannet(index, tmp_path)
    else:
        listing, _ = write_megadepth(tmp_path)
        loaded = pose.read_megadepth(listing, tmp_path, listing.parent / "scene_info_val_1500")
    result = pose.run(loaded, matchers, pose.PROTOCOLS[dataset], progress=False)
    check_well_formed(result, 2, METHODS)
    sift = result.row("SIFT").metrics
    assert sift["auc@20"] > 0.6 and sift["auc@10"] > 0.3 and sift["precision"] > 0.75, sift
    assert result.per_pair["nothing"]["pose_error"] == [math.inf, math.inf]
    assert result.config["protocol"]["epipolar_threshold"] == pose.PROTOCOLS[dataset].epipolar_threshold


def test_homography_benchmark(tmp_path: Path, matchers) -> None:
    cv2.setRNGSeed(0)
    result = homography.run(homography.read_hpatches(write_hpatches(tmp_path)), matchers, progress=False)
    check_well_formed(result, 10, METHODS)
    assert {r.split for r in result.rows} == {"all", "illumination", "viewpoint"}
    for split in ("all", "illumination", "viewpoint"):
        sift = result.row("SIFT", split).metrics
        assert sift["auc@5px"] > 0.75 and sift["auc@10px"] > 0.85, (split, sift)
    assert result.row("SIFT", "viewpoint").pairs == 5


def test_wxbs_benchmark(tmp_path: Path, matchers) -> None:
    cv2.setRNGSeed(0)
    loaded = wxbs.read_wxbs(write_wxbs(tmp_path))
    result = wxbs.run(loaded, matchers, progress=False)
    check_well_formed(result, 2, METHODS)
    sift = result.row("SIFT").metrics
    assert sift["frac@5px"] > 0.7 and sift["frac@20px"] > 0.9, sift
    assert result.row("SIFT", "WGBS").metrics["frac@5px"] > 0.8
    assert result.skipped == ("WGABS/broken",) and "WGABS/broken" in result.to_markdown()


def test_stereo_benchmark(tmp_path: Path, matchers) -> None:
    folder, _ = write_middlebury(tmp_path)
    result = middlebury.run(middlebury.read_pairs(folder), matchers, progress=False)
    check_well_formed(result, 1, METHODS)
    sift = result.row("SIFT").metrics
    assert sift["precision@1px"] > 0.85 and sift["with_gt"] > 50, sift


def test_synthetic_benchmark(tmp_path: Path, matchers) -> None:
    cv2.setRNGSeed(0)
    for name in ("camera", "coffee", "chelsea", "astronaut"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), texture(name, (160, 120)))
    cfg = synthetic.SyntheticConfig(size=160)
    result = synthetic.run(synthetic.read_synthetic(tmp_path, seed=0, cfg=cfg), matchers, progress=False, cfg=cfg)
    check_well_formed(result, 4, METHODS)
    sift = result.row("SIFT").metrics
    assert sift["auc@10px"] > 0.8 and sift["precision@3px"] > 0.85, sift
    assert result.benchmark == "synthetic" and result.config["generator"]["size"] == 160


def test_baseline_keypoints_come_back_in_original_pixels() -> None:
    """Matching a 2x-downscaled copy must give keypoints that fit the true H in ORIGINAL pixels."""
    H = np.array([[0.95, -0.08, 12.0], [0.07, 0.97, -6.0], [1e-4, 0.0, 1.0]])
    img0 = texture("astronaut", (320, 240))
    img1 = cv2.warpPerspective(img0, H, (320, 240))
    for matcher in (SIFTMatcher(max_size=160), ORBMatcher(max_size=160)):
        m = matcher(img0, img1)
        err = homography.match_errors(m.kpts0, m.kpts1, H)
        assert len(m) > 20 and np.median(err) < 1.5, (matcher.name, len(m), np.median(err))
        assert np.all(np.diff(m.scores) <= 0)
