from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("h5py")

from loftr import Matcher  # noqa: E402
from loftr.cli import main  # noqa: E402
from loftr.pipeline import PipelineError  # noqa: E402
from loftr.pipeline.batch import match_pairs, partial_dir, plan_batches  # noqa: E402
from loftr.pipeline.h5 import read_raw  # noqa: E402
from loftr.pipeline.pairs import exhaustive_pairs, list_images, sequential_pairs  # noqa: E402

from .conftest import MATCH_ARGS, assert_same_h5  # noqa: E402


def test_plan_batches_groups_by_shape_in_pair_order() -> None:
    shapes = {"a": (8, 8), "b": (8, 8), "c": (16, 8), "d": (8, 8)}
    pairs = [("a", "b"), ("a", "c"), ("b", "d"), ("b", "c"), ("a", "d"), ("d", "c")]
    assert plan_batches(pairs, shapes, 2) == [[0, 2], [1, 3], [4], [5]]
    assert plan_batches(pairs, shapes, 1) == [[i] for i in range(6)]
    with pytest.raises(PipelineError, match="at least 1"):
        plan_batches(pairs, shapes, 0)


def test_batched_matches_equal_the_matcher_per_pair(images: Path, tiny_weights: Path, tmp_path: Path) -> None:
    matcher = Matcher(weights=tiny_weights, max_size=150, threshold=0.0)  # 150 px: padded images, masks in play
    pairs = sequential_pairs(list_images(images), 2)  # KITTI-KITTI, KITTI-TUM and TUM-TUM pairs
    exact = read_raw(match_pairs(matcher, images, pairs, tmp_path / "b1.h5", batch_size=1).out)
    batched = read_raw(match_pairs(matcher, images, pairs, tmp_path / "b4.h5", batch_size=4).out)
    assert len(exact) == len(batched) == 11
    total = 0
    for a, b in pairs:
        ref = matcher(images / a, images / b)
        r = exact[f"{a}/{b}"]
        assert r.size0 == matcher.prepare(images / a).size
        np.testing.assert_array_equal(r.keypoints0, ref.keypoints0.numpy())
        np.testing.assert_array_equal(r.keypoints1, ref.keypoints1.numpy())
        np.testing.assert_array_equal(r.confidence, ref.confidence.numpy())
        q = batched[f"{a}/{b}"]  # other batch sizes: the same matches up to float rounding
        assert abs(len(q.confidence) - len(ref)) <= 1
        n = min(len(q.confidence), len(ref))
        np.testing.assert_allclose(q.keypoints1[:n], ref.keypoints1.numpy()[:n], atol=1e-3)
        total += len(ref)
    assert total > 50


def test_rerun_skips_done_pairs_and_refuses_other_settings(images: Path, tiny_weights: Path, tmp_path: Path) -> None:
    pairs = exhaustive_pairs(list_images(images))
    matcher = Matcher(weights=tiny_weights, max_size=150, threshold=0.0)
    first = match_pairs(matcher, images, pairs[:10], tmp_path / "m.h5", batch_size=2)
    assert (first.matched, first.skipped) == (10, 0)
    more = match_pairs(matcher, images, pairs, tmp_path / "m.h5", batch_size=2)
    assert (more.matched, more.skipped) == (11, 10) and len(read_raw(tmp_path / "m.h5")) == 21
    assert not partial_dir(tmp_path / "m.h5").exists()
    other = Matcher(weights=tiny_weights, max_size=150, threshold=0.1)
    with pytest.raises(PipelineError, match="another model or other options"):
        match_pairs(other, images, pairs, tmp_path / "m.h5")
    again = match_pairs(other, images, pairs[:3], tmp_path / "m.h5", overwrite=True)
    assert again.matched == 3 and len(read_raw(tmp_path / "m.h5")) == 3


def test_killed_run_resumes_to_the_same_file(images: Path, tiny_weights: Path, clean_run: Path, tmp_path: Path,
                                             capsys) -> None:
    out = tmp_path / "killed.h5"
    cmd = [sys.executable, "-m", "loftr.cli", "match-pairs", str(images), "--out", str(out), "--weights",
           str(tiny_weights), "--commit-every", "1", *MATCH_ARGS]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if len(list(partial_dir(out).glob("*.h5"))) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not out.exists()
    done = sum(len(read_raw(c)) for c in partial_dir(out).glob("*.h5"))  # every committed chunk is readable
    assert 4 <= done < 21
    assert main(cmd[3:]) == 0  # resume (in this process)
    assert f"{21 - done} matched, {done} already done" in capsys.readouterr().out
    assert not partial_dir(out).exists()
    assert_same_h5(out, clean_run)


def test_cli_errors_are_one_line_exit_1(images: Path, tiny_weights: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "pairs.txt"
    bad.write_text("tum_1311868169.163498.png kitti_000100.png\ntum_1311868169.163498.png missing.png\n")
    rc = main(["match-pairs", str(images), "--pairs", str(bad), "--out", str(tmp_path / "o.h5"), "--weights",
               str(tiny_weights)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err == f"loftr: error: {bad}:2: image 'missing.png' is not in the image folder"
    rc = main(["match-pairs", str(tmp_path / "nope"), "--exhaustive", "--out", str(tmp_path / "o.h5")])
    assert rc == 1 and "does not exist or is not a folder" in capsys.readouterr().err


def test_pairs_command_writes_a_pairs_file(images: Path, tmp_path: Path, capsys) -> None:
    assert main(["pairs", str(images), "--sequential", "2", "--out", str(tmp_path / "p.txt")]) == 0
    assert "11 pairs written" in capsys.readouterr().out
    lines = (tmp_path / "p.txt").read_text().splitlines()
    assert lines[0] == "kitti_000100.png kitti_000101.png" and len(lines) == 11


def test_two_way_matching_shares_an_images_grid_keypoints_across_its_pairs(images: Path, tiny_weights: Path,
                                                                           tmp_path: Path) -> None:
    """Image b is image1 of (a, b) and image0 of (b, c): one-way, its keypoints of the two pairs are different points
    (refined in one, on the coarse grid in the other); two-way, its grid keypoints are in both pairs' matches, the
    links a track of three views needs."""
    import h5py

    a, b, c = sorted(n for n in list_images(images) if n.startswith("tum"))[:3]
    pairs = [(a, b), (b, c)]

    def shared(two_way: bool) -> int:
        matcher = Matcher(weights=tiny_weights, max_size=150, threshold=0.0, two_way=two_way)
        out = match_pairs(matcher, images, pairs, tmp_path / f"{two_way}.h5").out
        with h5py.File(out, "r") as f:
            m_ab, m_bc = f[f"{a}/{b}"]["matches0"][()], f[f"{b}/{c}"]["matches0"][()]
            assert json.loads(f.attrs["settings"]).get("two_way", False) == two_way
        return len(set(m_ab[m_ab >= 0].tolist()) & set(np.flatnonzero(m_bc >= 0).tolist()))

    one, two = shared(False), shared(True)
    assert two >= 5 and two > 3 * one  # 21 matches a pair (random weights, 150 px): 8 shared against 0
