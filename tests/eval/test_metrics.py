"""Scoring functions on exact data, the report (table, JSON) and the matcher plumbing."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from loftr.errors import LoFTRError
from loftr.eval.baselines import PairMatches, build_baselines, parse_baselines
from loftr.eval.homography import HomographyPair, HomographyProtocol, aggregate_homography, score_homography
from loftr.eval.middlebury import RectifiedPair, score_stereo
from loftr.eval.pose import PROTOCOLS, PosePair, aggregate_pose, score_pose
from loftr.eval.report import Column, Loaded, evaluate, per_pair_arrays, run_benchmark, summarise
from loftr.eval.wxbs import WxBSPair, WxBSProtocol, score_wxbs

from .conftest import install_stand_in
from .scenes import K_TINY, gt_correspondences, room_pose

IDENTITY = np.eye(4)


def exact(corrs: np.ndarray) -> PairMatches:
    return PairMatches.create(corrs[:, :2], corrs[:, 2:], np.ones(len(corrs)))


def test_pose_score_exact_matches_and_wrong_ground_truth() -> None:
    T = room_pose(0)
    corrs = gt_correspondences(IDENTITY, T, step=8)
    pair = PosePair("p", "scannet", Path("a"), Path("b"), K_TINY, K_TINY, T)
    rec = score_pose(pair, exact(corrs), PROTOCOLS["scannet"])
    assert rec["pose_error"] < 0.1 and rec["precision"] == 1.0 and rec["inliers"] > 0.9 * len(corrs)
    wrong = PosePair("p", "scannet", Path("a"), Path("b"), K_TINY, K_TINY, np.linalg.inv(T))
    rec = score_pose(wrong, exact(corrs), PROTOCOLS["scannet"])
    assert rec["pose_error"] > 5 and rec["precision"] < 0.5
    empty = score_pose(pair, PairMatches.empty(), PROTOCOLS["scannet"])
    assert empty["pose_error"] == math.inf and empty["precision"] == 0.0


def test_pose_aggregate_is_the_auc_of_the_max_errors() -> None:
    records = [{"pose_error": 0.0, "precision": 1.0}, {"pose_error": math.inf, "precision": 0.5}]
    agg = aggregate_pose(records, PROTOCOLS["megadepth"])
    assert agg == {"auc@5": 0.5, "auc@10": 0.5, "auc@20": 0.5, "precision": 0.75}


def test_pose_orders_score_every_shuffle_and_average_the_auc() -> None:
    T = room_pose(0)
    corrs = gt_correspondences(IDENTITY, T, step=8)
    pair = PosePair("p", "scannet", Path("a"), Path("b"), K_TINY, K_TINY, T)
    protocol = replace(PROTOCOLS["scannet"], orders=3)
    rec = score_pose(pair, exact(corrs), protocol)
    assert len(rec["pose_errors"]) == 3 and rec["pose_errors"][0] == rec["pose_error"]
    assert max(rec["pose_errors"]) < 0.1  # exact matches: every order recovers the pose
    assert score_pose(pair, PairMatches.empty(), protocol)["pose_errors"] == [math.inf] * 3
    # noisy matches with outliers: another shuffle seed draws other orders, the given order stays first
    rng = np.random.default_rng(3)
    noisy = corrs + rng.normal(0, 1.0, corrs.shape)
    noisy[::5, 2:] = rng.uniform(0, 64, (len(noisy[::5]), 2))
    a = score_pose(pair, exact(noisy), replace(protocol, orders=4))["pose_errors"]
    b = score_pose(pair, exact(noisy), replace(protocol, orders=4, shuffle_seed=1))["pose_errors"]
    assert a[0] == b[0] and a[1:] != b[1:]
    records = [{"pose_error": 0.0, "pose_errors": [0.0, 0.0, math.inf], "precision": 1.0},
               {"pose_error": math.inf, "pose_errors": [math.inf, 0.0, 0.0], "precision": 1.0}]
    agg = aggregate_pose(records, replace(PROTOCOLS["megadepth"], orders=3))
    assert agg["auc@5"] == 0.5  # the first order, as without --orders
    assert agg["auc@5_mean"] == pytest.approx(2 / 3) and agg["auc@5_std"] == pytest.approx(np.std([0.5, 1, 0.5]))
    assert "auc@5_mean" not in aggregate_pose(records, PROTOCOLS["megadepth"])


def test_wxbs_score_exact_and_failed() -> None:
    T = room_pose(1)
    corrs = gt_correspondences(IDENTITY, T, step=8)
    pair = WxBSPair("c/p", "c", Path("a"), Path("b"), gt_correspondences(IDENTITY, T, step=12))
    rec = score_wxbs(pair, exact(corrs), WxBSProtocol())
    assert rec["frac@1px"] == 1.0 and rec["median_error"] < 0.1
    failed = score_wxbs(pair, PairMatches.empty(), WxBSProtocol())
    assert failed["frac@20px"] == 0.0 and failed["median_error"] == math.inf and failed["inliers"] == 0


def test_homography_score_in_evaluation_frame() -> None:
    """Matches that fit a slightly wrong H exactly: the estimate is that H, and its corner error measured with the
    images scaled to a 480 px shorter side is 4x the error in the original 160x120 pixels."""
    H = np.array([[1.0, 0.02, 3.0], [-0.01, 1.0, 2.0], [0.0, 0.0, 1.0]])
    H_wrong = H @ np.array([[1.0, 0.0, 1.5], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]])
    g = np.stack(np.meshgrid(np.arange(5.0, 160, 15), np.arange(5.0, 120, 15)), -1).reshape(-1, 2)
    h = np.c_[g, np.ones(len(g))] @ H_wrong.T
    matches = PairMatches.create(g, h[:, :2] / h[:, 2:], np.ones(len(g)))
    pair = HomographyPair("s/1-2", "viewpoint", np.zeros((120, 160)), np.zeros((120, 160)), H, (160, 120), (160, 120))
    original = score_homography(pair, matches, HomographyProtocol(eval_short_side=None, precision_thresholds=(1, 3)))
    scaled = score_homography(pair, matches, HomographyProtocol(eval_short_side=480, precision_thresholds=(1, 3)))
    assert 1.0 < original["corner_error"] < 3.0
    assert scaled["corner_error"] == pytest.approx(4 * original["corner_error"], rel=0.02)
    assert original["precision@3px"] == 1.0 and original["precision@1px"] == 0.0 and scaled["precision@3px"] == 0.0
    agg = aggregate_homography([original, {**original, "corner_error": math.inf}],
                               HomographyProtocol(eval_short_side=None, precision_thresholds=(1, 3)))
    assert agg["auc@10px"] == pytest.approx(0.5 * (1 - original["corner_error"] / 20), abs=1e-9)
    assert agg["precision@3px"] == 1.0


def test_stereo_score_counts_known_disparity_only() -> None:
    disparity = np.full((10, 20), 3.0)
    disparity[:, :5] = np.inf
    k0 = np.array([[10.0, 2.0], [12.0, 5.0], [2.0, 5.0], [15.0, 8.0]])
    k1 = k0 - [[3.0, 0.0], [3.0, 0.0], [3.0, 0.0], [1.0, 0.0]]  # the last is 2 px off
    rec = score_stereo(RectifiedPair("s", "m", Path("l"), Path("r"), disparity), PairMatches.create(k0, k1, np.ones(4)))
    assert rec == {"precision@1px": 2 / 3, "precision@3px": 1.0, "with_gt": 3}


class Fixed:
    """A matcher returning the given matches (whatever the images)."""

    def __init__(self, name: str, matches: PairMatches) -> None:
        self.name, self.matches = name, matches

    def __call__(self, image0, image1) -> PairMatches:
        return self.matches


def test_report_summary_splits_markdown_and_json(tmp_path: Path) -> None:
    img = np.zeros((8, 8), np.uint8)
    pairs = tuple(WxBSPair(f"{c}/p{i}", c, img, img, np.zeros((1, 4))) for i, c in enumerate("AAB"))
    m = PairMatches.create(np.zeros((3, 2)), np.ones((3, 2)), np.array([0.1, 0.9, 0.5]))
    assert m.scores.tolist() == [0.9, 0.5, 0.1]
    score = lambda pair, matches: {"x": 1.0 if pair.split == "A" else 0.0, "err": math.inf}  # noqa: E731
    aggregate = lambda recs: {"x": float(np.mean([r["x"] for r in recs])), "nan": math.nan}  # noqa: E731
    result = run_benchmark("toy", "Toy", Loaded(pairs, ("C/missing",)), [Fixed("M", m)], score, aggregate,
                           [Column("x", "X"), Column("nan", "N", "float")], progress=False)
    assert [(r.split, r.pairs, r.metrics["x"]) for r in result.rows] == [("all", 3, 2 / 3), ("A", 2, 1.0),
                                                                        ("B", 1, 0.0)]
    md = result.to_markdown()
    assert "| M | all | 3 | 66.7 | – | 3 |" in md and "Skipped (1, files missing): C/missing" in md
    js, md_file = result.write(tmp_path / "out")
    data = json.loads(js.read_text())
    assert data["pairs"]["M"]["err"] == [None, None, None] and data["pairs"]["M"]["name"] == ["A/p0", "A/p1", "B/p2"]
    assert data["summary"][0]["nan"] is None and md_file.read_text() == md
    with pytest.raises(LoFTRError, match="share a name"):
        evaluate(pairs, [Fixed("M", m), Fixed("M", m)], score, progress=False)
    assert per_pair_arrays({"M": []}) == {"M": {}}
    assert summarise({"M": []}, aggregate) == ()


def test_baseline_names_and_optional_lightglue(caplog) -> None:
    assert parse_baselines(" SIFT, orb,sift") == ("sift", "orb")
    with pytest.raises(LoFTRError, match="unknown baseline 'surf'"):
        parse_baselines("sift,surf")
    import importlib.util

    if importlib.util.find_spec("lightglue") is not None:
        pytest.skip("lightglue is installed here")
    with caplog.at_level(logging.WARNING, logger="loftr.eval.baselines"):
        built = build_baselines(["sift", "lightglue"])
    assert [b.name for b in built] == ["SIFT"] and "lightglue skipped" in caplog.text


def test_lightglue_adapter_with_a_stand_in_package(monkeypatch) -> None:
    """The adapter's plumbing (which keypoints a match pairs, sorting by score), with a stand-in ``lightglue``
    module: the real package is optional and not installed here."""
    import torch

    class SuperPoint:
        def __init__(self, max_num_keypoints: int) -> None:
            self.calls = 0

        def eval(self):
            return self

        def to(self, device):
            return self

        def extract(self, image: torch.Tensor, resize: int | None = None) -> dict:
            assert image.shape[:2] == (1, 8) and resize == 640  # (1, H, W) grey, longest side passed on
            self.calls += 1
            base = torch.arange(6, dtype=torch.float32).reshape(3, 2)
            return {"keypoints": (base + 100 * self.calls)[None]}

    install_stand_in(monkeypatch, "lightglue", "superpoint", "SuperPoint", SuperPoint)
    (matcher,) = build_baselines(["lightglue"], max_size=640)
    m = matcher(np.zeros((8, 10), np.uint8), np.zeros((8, 10), np.uint8))
    assert matcher.name == "SuperPoint+LightGlue"
    np.testing.assert_allclose(m.scores, [0.7, 0.2], rtol=1e-6)
    np.testing.assert_array_equal(m.kpts0, [[104.0, 105.0], [100.0, 101.0]])  # image0 rows 2 and 0
    np.testing.assert_array_equal(m.kpts1, [[202.0, 203.0], [204.0, 205.0]])  # image1 rows 1 and 2
