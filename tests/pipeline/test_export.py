from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from loftr import Matcher  # noqa: E402
from loftr.cli import main  # noqa: E402
from loftr.pipeline import PipelineError  # noqa: E402
from loftr.pipeline.export import OnnxMatcher, compare_matches, export_onnx, fine_path  # noqa: E402

from .conftest import TUM, small_copies  # noqa: E402


def _check(c: dict) -> None:
    assert c["eager"] >= 20, c
    assert c["recall"] >= 0.95 and abs(c["other"] - c["eager"]) <= 0.05 * c["eager"], c
    assert c["max_kpt1_diff_px"] < 0.02 and c["max_conf_diff"] < 1e-3, c


def test_fixed_size_export_matches_like_the_eager_model(tiny_weights: Path, tmp_path: Path) -> None:
    photos = small_copies(TUM[:2], tmp_path / "img", side=320)
    a, b = sorted(photos.iterdir())
    eager = Matcher(weights=tiny_weights, resize=(160, 120), threshold=0.0)
    path, fine = export_onnx(eager.model, tmp_path / "m.onnx", height=120, width=160)
    assert fine == fine_path(path) == tmp_path / "m.fine.onnx" and fine.is_file()
    runner = OnnxMatcher(path, threshold=0.0, threads=1)
    assert runner.settings.size == (160, 120)
    _check(compare_matches(eager(a, b), runner(a, b)))
    # the fine-spread filter (see LoFTRConfig.fine_max_std) drops the same matches in both
    eager_f = Matcher(eager.model, resize=(160, 120), threshold=0.0, max_std=1.0)
    runner_f = OnnxMatcher(path, threshold=0.0, threads=1, max_std=1.0)
    c = compare_matches(eager_f(a, b), runner_f(a, b))
    assert 0 < c["eager"] == c["other"] == c["common"] < len(eager(a, b)), c
    assert c["max_kpt1_diff_px"] < 0.02 and c["max_conf_diff"] < 1e-3, c
    with pytest.raises(PipelineError, match="multiples of 8"):
        export_onnx(eager.model, tmp_path / "bad.onnx", height=121, width=160)


def test_dynamic_export_cli_verifies_padded_images_of_two_sizes(images: Path, tiny_weights: Path, tmp_path: Path,
                                                                capsys) -> None:
    a, b = images / "kitti_000100.png", images / "tum_1311868169.163498.png"  # 150x45 and 150x112: both padded
    rc = main(["export", "onnx", str(tmp_path / "d.onnx"), "--dynamic", "--weights", str(tiny_weights),
               "--max-size", "150", "--threshold", "0", "--verify", str(a), str(b)])
    out = capsys.readouterr().out
    found = re.search(r"verify: eager (\d+) matches, onnx (\d+), in common (\d+)", out)
    assert rc == 0 and found, out
    n_eager, n_onnx, common = (int(v) for v in found.groups())
    assert n_eager >= 3 and n_onnx == n_eager and common >= 0.95 * n_eager, out
    eager = Matcher(weights=tiny_weights, max_size=150, threshold=0.0)
    runner = OnnxMatcher(tmp_path / "d.onnx", max_size=150, threshold=0.0, threads=1)
    c = compare_matches(eager(b, b.with_name("tum_1311868169.263274.png")),
                        runner(b, b.with_name("tum_1311868169.263274.png")))
    _check(c)
    assert main(["export", "onnx", str(tmp_path / "x.onnx"), "--weights", str(tiny_weights)]) == 1
    assert "give --height and --width, or --dynamic" in capsys.readouterr().err
