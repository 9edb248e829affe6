from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("h5py")

from loftr.pipeline import PipelineError  # noqa: E402
from loftr.pipeline.h5 import (PairResult, merge_files, merge_keypoints, pair_key, read_matches, read_raw,  # noqa: E402
                               write_final, write_raw_file)


def _pair(a: str, b: str, k0, k1, conf, scale=(1.0, 1.0)) -> PairResult:
    return PairResult(a, b, np.asarray(k0, np.float32), np.asarray(k1, np.float32), np.asarray(conf, np.float32),
                      (100, 80), (100, 80), scale, scale)


def test_pair_key_is_hlocs() -> None:
    assert pair_key("a.jpg", "b.jpg") == "a.jpg/b.jpg"
    assert pair_key("seq/a.jpg", "seq/b.jpg") == "seq-a.jpg/seq-b.jpg"


def test_merge_snaps_to_the_grid_keeps_the_best_and_matches_one_to_one() -> None:
    ab = _pair("a", "b", [[12.0, 12.0], [28.0, 28.0], [28.5, 27.75]], [[12.0, 11.0], [50.0, 50.0], [60.0, 60.0]],
               [0.9, 0.5, 0.7])
    ca = _pair("c", "a", [[5.0, 5.0]], [[12.75, 11.5]], [0.95])
    m = merge_keypoints([ab, ca], quantize=4.0)
    # a: (12, 12) and (12.75, 11.5) share a 4-px cell, the best (0.95) wins; (28, 28) and (28.5, 27.75) share one.
    a = {tuple(np.round(p, 2).tolist()): s for p, s in zip(m.keypoints["a"], m.scores["a"])}
    assert a == {(12.75, 11.5): pytest.approx(0.95), (28.5, 27.75): pytest.approx(0.7)}
    m0, s0 = m.matches["a/b"]
    assert m0.dtype == np.int32 and s0.dtype == np.float32 and len(m0) == 2
    got = {tuple(np.round(m.keypoints["a"][i], 2).tolist()): tuple(np.round(m.keypoints["b"][j], 2).tolist())
           for i, j in enumerate(m0) if j >= 0}
    # the cell of (28, 28) keeps its most confident raw match (0.7 → (60, 60)), not (50, 50)
    assert got == {(12.75, 11.5): (12.0, 11.0), (28.5, 27.75): (60.0, 60.0)}
    assert sorted(s0[m0 >= 0]) == pytest.approx([0.7, 0.9])
    assert len(m.keypoints["b"]) == 3 and m.matches["c/a"][0].tolist() == [0]


def test_sub_pixel_keypoints_survive_the_merge_exactly() -> None:
    """The grid only decides which observations are one keypoint: a merged keypoint lies at an observation's own
    sub-pixel position, never at the cell's centre, and a pair's matches keep the exact raw coordinates."""
    rng = np.random.default_rng(0)
    k0 = (rng.uniform(0, 99, (200, 2)) * 4).astype(np.float32)  # sub-pixel points, 4 original px per network px
    k1 = (k0 + rng.uniform(-3, 3, k0.shape)).astype(np.float32)
    r = _pair("a", "b", k0, k1, rng.uniform(0.2, 1, 200), scale=(0.25, 0.25))
    m = merge_keypoints([r], quantize=1.0)
    raw = {tuple(p) for p in k0.tolist()}
    assert all(tuple(p) in raw for p in m.keypoints["a"].tolist())  # every keypoint is a raw observation
    assert np.abs(m.keypoints["a"] - np.round(m.keypoints["a"])).max() > 0.4  # not snapped to a grid
    m0 = m.matches["a/b"][0]
    got = {tuple(m.keypoints["a"][i].tolist()): tuple(m.keypoints["b"][j].tolist()) for i, j in enumerate(m0)
           if j >= 0}
    pairs = {tuple(a): tuple(b) for a, b in zip(k0.tolist(), k1.tolist())}
    assert len(got) > 150 and all(pairs[a] == b for a, b in got.items())


def test_quantize_grid_is_in_network_pixels_and_zero_merges_only_equal_points() -> None:
    r = _pair("a", "b", [[0.0, 0.0], [7.0, 0.0]], [[0.0, 0.0], [40.0, 0.0]], [0.5, 0.6], scale=(0.25, 0.25))
    assert len(merge_keypoints([r], quantize=4.0).keypoints["a"]) == 1  # 7 px = 1.75 network px
    assert len(merge_keypoints([r], quantize=1.0).keypoints["a"]) == 2
    assert len(merge_keypoints([r], quantize=0.0).keypoints["a"]) == 2
    m = merge_keypoints([r], quantize=4.0)
    assert (m.matches["a/b"][0] >= 0).sum() == 1  # two raw matches of one merged keypoint: one survives


def test_final_file_layout_round_trip_and_hloc_reads(tmp_path: Path) -> None:
    import h5py

    rs = {r.key: r for r in [_pair("a", "b", [[10, 10], [20, 20]], [[11, 12], [25, 26]], [0.8, 0.6]),
                             _pair("b", "c", [[25, 26]], [[1, 2]], [0.7])]}
    out = write_final(tmp_path / "m.h5", rs, json.dumps({"x": 1}), quantize=0.0)
    with h5py.File(out) as f:
        assert f["a/keypoints"].shape == (2, 2) and f["a/image_size"][()].tolist() == [100, 80]
        assert f["a/b/matches0"].shape == (2,) and f["a/b/matching_scores0"].dtype == np.float32
        assert f["pairs/a/b/keypoints0"].shape == (2, 2) and f["pairs/a/b"].attrs["name1"] == "b"
        assert f.attrs["format"] == "loftr-pairs-h5/1" and json.loads(f.attrs["settings"]) == {"x": 1}
    back = read_raw(out)
    assert set(back) == {"a/b", "b/c"} and np.array_equal(back["a/b"].keypoints1, rs["a/b"].keypoints1)
    k0, k1, s = read_matches(out, "a", "b")
    assert k0.tolist() == [[10, 10], [20, 20]] and k1.tolist() == [[11, 12], [25, 26]]
    k1r, k0r, _ = read_matches(out, "b", "a")
    assert np.array_equal(k0r, k0) and np.array_equal(k1r, k1)
    with pytest.raises(PipelineError, match=r"pair \(a, c\) is not in"):
        read_matches(out, "a", "c")
    assert not list(tmp_path.glob("*.tmp"))


def test_merge_files_refuses_mixed_settings_and_reserved_names(tmp_path: Path) -> None:
    p1 = write_raw_file(tmp_path / "p1.h5", [_pair("a", "b", [[1, 1]], [[2, 2]], [0.5])], '{"s": 1}')
    p2 = write_raw_file(tmp_path / "p2.h5", [_pair("b", "c", [[1, 1]], [[2, 2]], [0.5])], '{"s": 2}')
    with pytest.raises(PipelineError, match="other settings"):
        merge_files([p1, p2], tmp_path / "m.h5", 4.0)
    assert set(read_raw(merge_files([p1, p2], tmp_path / "m.h5", 4.0, force=True))) == {"a/b", "b/c"}
    bad = write_raw_file(tmp_path / "bad.h5", [_pair("pairs/x", "b", [[1, 1]], [[2, 2]], [0.5])], "{}")
    with pytest.raises(PipelineError, match="collides with the /pairs group"):
        merge_files([bad], tmp_path / "m2.h5", 4.0)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(PipelineError, match="cannot read"):
        merge_files([tmp_path / "junk.h5"], tmp_path / "m3.h5", 4.0)
