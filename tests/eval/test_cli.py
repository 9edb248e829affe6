"""``loftr eval BENCH`` through loftr.cli.main: files written, table printed, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loftr.cli import main

from .conftest import SHARED
from .datasets import write_hpatches, write_megadepth, write_middlebury, write_scannet

FAST = ["--max-size", "160", "--no-progress"]


def run_eval(capsys, out: Path, *args: str) -> tuple[dict, str]:
    rc = main(["eval", *args, "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert (out / "results.md").read_text() in captured.out
    return json.loads((out / "results.json").read_text()), captured.out


def test_eval_synthetic_limit_2(tiny_weights: Path, tmp_path: Path, capsys) -> None:
    photos = SHARED / "data" / "photos"
    if not photos.is_dir():
        pytest.skip("shared photos not available")
    data, out = run_eval(capsys, tmp_path, "synthetic", str(photos), "--limit", "2", "--size", "160",
                         "--weights", str(tiny_weights), *FAST)
    assert [s["method"] for s in data["summary"]] == ["LoFTR (tiny.safetensors)", "SIFT", "ORB"]
    assert all(len(v) == 2 for v in data["pairs"]["SIFT"].values())
    assert data["config"]["generator"]["size"] == 160 and data["config"]["limit"] == 2
    assert "| SIFT | all | 2 |" in out and "AUC@3px" in out


def test_eval_wxbs_limit_2_finds_the_shared_data(tiny_weights: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    if not (SHARED / "data" / "wxbs").is_dir():
        pytest.skip("shared WxBS data not available")
    monkeypatch.setenv("LOFTR_SHARED_DATA", str(SHARED / "data"))
    data, out = run_eval(capsys, tmp_path, "wxbs", "--limit", "2", "--weights", str(tiny_weights),
                         "--baselines", "sift", *FAST)
    assert [s["method"] for s in data["summary"] if s["split"] == "all"] == ["LoFTR (tiny.safetensors)", "SIFT"]
    assert data["pairs"]["SIFT"]["name"] == ["WGABS/kremlin", "WGABS/kyiv"]
    assert data["config"]["root"] == str((SHARED / "data" / "wxbs").resolve()) and "GT<5px" in out


def test_eval_pose_scannet_and_megadepth(tiny_weights: Path, tmp_path: Path, capsys) -> None:
    index, _ = write_scannet(tmp_path / "scannet")
    data, _ = run_eval(capsys, tmp_path / "o1", "pose", "--dataset", "scannet", "--index", str(index), "--root",
                       str(tmp_path / "scannet"), "--weights", str(tiny_weights), "--resize", "320", "240",
                       "--no-progress")
    assert data["config"]["resize"] == [320, 240] and data["benchmark"] == "pose-scannet"
    assert len(data["pairs"]["SIFT"]["pose_error"]) == 2
    listing, _ = write_megadepth(tmp_path / "md")
    data, _ = run_eval(capsys, tmp_path / "o2", "pose", "--dataset", "megadepth", "--index", str(listing),
                       "--npz-dir", str(listing.parent / "scene_info_val_1500"), "--root", str(tmp_path / "md"),
                       "--weights", str(tiny_weights), "--no-baselines", "--no-progress")
    assert data["config"]["max_size"] == 840 and [s["method"] for s in data["summary"]] == ["LoFTR (tiny.safetensors)"]


def test_eval_homography_and_stereo_folders(tiny_weights: Path, tmp_path: Path, capsys) -> None:
    write_hpatches(tmp_path / "hp")
    data, out = run_eval(capsys, tmp_path / "o1", "homography", str(tmp_path / "hp"), "--eval-short-side", "0",
                         "--weights", str(tiny_weights), "--baselines", "orb", *FAST)
    assert {s["split"] for s in data["summary"]} == {"all", "illumination", "viewpoint"}
    assert data["config"]["protocol"]["eval_short_side"] is None and "original pixels" in out
    folder, _ = write_middlebury(tmp_path / "mb")
    data, out = run_eval(capsys, tmp_path / "o2", "stereo", str(folder), "--weights", str(tiny_weights), *FAST)
    assert data["pairs"]["SIFT"]["name"] == ["Room-perfect"] and "P@1px" in out


def test_matching_size_defaults_per_benchmark() -> None:
    """ScanNet: 640x480; MegaDepth: longest side 840; --max-size 0 keeps the images; --resize wins."""
    from loftr.cli import build_parser
    from loftr.eval.cli import _sizes
    from loftr.eval.pose import PROTOCOLS

    parser = build_parser()
    base = ["eval", "pose", "--index", "i", "--root", "r", "--dataset"]
    scannet, megadepth = PROTOCOLS["scannet"], PROTOCOLS["megadepth"]
    assert _sizes(parser.parse_args([*base, "scannet"]), scannet.resize, scannet.max_size) == ((640, 480), None)
    assert _sizes(parser.parse_args([*base, "megadepth"]), megadepth.resize, megadepth.max_size) == (None, 840)
    args = parser.parse_args([*base, "megadepth", "--max-size", "1152"])
    assert _sizes(args, megadepth.resize, megadepth.max_size) == (None, 1152)
    args = parser.parse_args([*base, "scannet", "--max-size", "0"])
    assert _sizes(args, scannet.resize, scannet.max_size) == (None, None)
    args = parser.parse_args(["eval", "wxbs", "--resize", "300", "200"])
    assert _sizes(args, None, 640) == ((300, 200), None)
    assert _sizes(parser.parse_args(["eval", "wxbs"]), None, 640) == (None, 640)


@pytest.mark.parametrize("args,expected", [
    (["wxbs", "/nonexistent/wxbs"], "does not exist"),
    (["stereo", "--baselines", "sift,surf"], "unknown baseline 'surf'"),
    (["stereo", "--limit", "0"], "at least 1"),
])
def test_eval_user_errors_are_one_line(tiny_weights: Path, tmp_path: Path, capsys, args: list[str],
                                       expected: str) -> None:
    rc = main(["eval", *args, "--weights", str(tiny_weights), "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and expected in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
