from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("h5py")

from loftr.cli import main  # noqa: E402
from loftr.pipeline.batch import part_path, partial_dir  # noqa: E402
from loftr.pipeline.h5 import read_raw, read_settings, write_raw_file  # noqa: E402

from .conftest import MATCH_ARGS, assert_same_h5  # noqa: E402


def test_two_ranks_with_torchrun_equal_one_process(images: Path, tiny_weights: Path, clean_run: Path,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "dist.h5"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "loftr.cli",
           "match-pairs", str(images), "--out", str(out), "--weights", str(tiny_weights), *MATCH_ARGS]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "21 pairs: 21 matched on 2 ranks, 0 already done" in run.stdout
    assert not part_path(out, 0).exists() and not part_path(out, 1).exists() and not partial_dir(out).exists()
    assert_same_h5(out, clean_run)


def test_merge_matches_command_rebuilds_the_file_from_parts(clean_run: Path, tmp_path: Path, capsys) -> None:
    raw = read_raw(clean_run)
    keys = sorted(raw)
    settings = read_settings(clean_run)
    p0 = write_raw_file(tmp_path / "x.rank0.h5", [raw[k] for k in keys[::2]], settings)
    p1 = write_raw_file(tmp_path / "x.rank1.h5", [raw[k] for k in keys[1::2]], settings)
    assert main(["merge-matches", str(tmp_path / "x.h5"), str(p0), str(p1)]) == 0
    assert "merged 2 files" in capsys.readouterr().out
    assert_same_h5(tmp_path / "x.h5", clean_run)
