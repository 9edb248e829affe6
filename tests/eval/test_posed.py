"""``loftr eval posed``: scenes of images + cameras.json read into pose pairs, scored by the pose protocol."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from loftr.cli import main
from loftr.errors import LoFTRError
from loftr.eval.baselines import PairMatches
from loftr.eval.posed import PROTOCOL, read_posed, run

from .conftest import SHARED
from .scenes import K_TINY, backproject, project, render_with_depth, room_pose

VIEWS = (np.eye(4), room_pose(0), room_pose(1))


def write_scene(folder: Path) -> Path:
    """Three rendered views of the test room with their exact cameras, in the posed layout."""
    (folder / "images").mkdir(parents=True)
    cams = {}
    for k, T in enumerate(VIEWS):
        cv2.imwrite(str(folder / "images" / f"{k:04d}.png"), render_with_depth(T)[0])
        cams[f"{k:04d}.png"] = {"K": K_TINY.tolist(), "R": T[:3, :3].tolist(), "t": T[:3, 3].tolist()}
    (folder / "cameras.json").write_text(json.dumps(cams))
    return folder


class TrueMatcher:
    """Exact correspondences from the rendered depth (what a perfect matcher returns)."""

    name = "truth"

    def __call__(self, image0, image1) -> PairMatches:
        k0, k1 = (next(k for k, T in enumerate(VIEWS) if np.array_equal(render_with_depth(T)[0], img))
                  for img in (image0, image1))
        _, depth0 = render_with_depth(VIEWS[k0])
        ys, xs = np.mgrid[4:120:6, 4:160:6]
        p0 = np.c_[xs.ravel(), ys.ravel()].astype(np.float64)
        p1 = project(backproject(p0, depth0, VIEWS[k0]), VIEWS[k1])
        keep = (p1[:, 0] > 0) & (p1[:, 0] < 159) & (p1[:, 1] > 0) & (p1[:, 1] < 119)
        return PairMatches.create(p0[keep], p1[keep], np.ones(int(keep.sum())))


def test_read_posed_pairs_views_at_each_gap_with_the_relative_pose(tmp_path: Path) -> None:
    root = tmp_path / "posed"
    write_scene(root / "room")
    loaded = read_posed(root, gaps=(1, 2), stride=1)
    assert [p.name for p in loaded.pairs] == ["room/0000-0001", "room/0001-0002", "room/0000-0002"]
    assert {p.split for p in loaded.pairs} == {"room"}
    X = np.array([[0.3, -0.2, 2.0], [-0.5, 0.4, 2.4]])
    for pair in loaded.pairs:
        a, b = int(pair.image0.stem), int(pair.image1.stem)
        x0 = X @ VIEWS[a][:3, :3].T + VIEWS[a][:3, 3]
        x1 = x0 @ pair.T_0to1[:3, :3].T + pair.T_0to1[:3, 3]
        np.testing.assert_allclose(x1, X @ VIEWS[b][:3, :3].T + VIEWS[b][:3, 3], atol=1e-9)
    assert len(read_posed(root / "room", gaps=(1,), stride=2).pairs) == 1  # a scene folder works as the root


def test_read_posed_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(LoFTRError, match="does not exist"):
        read_posed(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoFTRError, match="no scene folders"):
        read_posed(tmp_path / "empty")
    write_scene(tmp_path / "s")
    with pytest.raises(LoFTRError, match="no scene other"):
        read_posed(tmp_path, scenes=["other"])
    with pytest.raises(LoFTRError, match="at least 1"):
        read_posed(tmp_path, gaps=(0,))
    (tmp_path / "s" / "cameras.json").write_text('{"0000.png": {"K": [1, 2]}}')
    with pytest.raises(LoFTRError, match="needs K"):
        read_posed(tmp_path)


def test_exact_matches_recover_the_pose(tmp_path: Path) -> None:
    loaded = read_posed(write_scene(tmp_path / "room"), gaps=(1, 2), stride=1)
    result = run(loaded, [TrueMatcher()], PROTOCOL, progress=False)
    errors = result.per_pair["truth"]["pose_error"]
    assert len(errors) == 3 and max(errors) < 1.0
    row = result.row("truth")
    assert row.metrics["auc@5"] > 0.8 and row.metrics["precision"] == 1.0


def test_eval_posed_cli_writes_results(tiny_weights: Path, tmp_path: Path, capsys) -> None:
    write_scene(tmp_path / "data" / "room")
    rc = main(["eval", "posed", str(tmp_path / "data"), "--gaps", "1", "--stride", "1", "--weights",
               str(tiny_weights), "--max-size", "160", "--no-progress", "--baselines", "sift",
               "--out", str(tmp_path / "out"), "--orders", "2"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["benchmark"] == "pose-posed" and data["config"]["gaps"] == [1]
    assert data["config"]["protocol"]["orders"] == 2
    assert [s["method"] for s in data["summary"]] == ["LoFTR (tiny.safetensors)", "SIFT"]
    assert all(len(e) == 2 for e in data["pairs"]["SIFT"]["pose_errors"])
    assert "auc@5_mean" in data["summary"][1] and "auc@5_std" in data["summary"][1]


def test_shared_posed_scenes_read() -> None:
    root = SHARED / "data" / "posed"
    if not root.is_dir():
        pytest.skip("shared posed data not available")
    loaded = read_posed(root)
    assert {p.split for p in loaded.pairs} == {"fox", "castle-P19", "castle-P30"} and not loaded.skipped
