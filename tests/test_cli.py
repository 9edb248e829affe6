from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from loftr import LoFTR
from loftr.cli import main
from loftr.weights import save_safetensors

from .conftest import TUM0, TUM1, photo


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_safetensors(LoFTR("tiny_ds"), tmp_path_factory.mktemp("w") / "tiny.safetensors", preset="tiny_ds")


def test_match_prints_count_and_writes_figure_and_matches(weights_file: Path, tmp_path: Path, capsys) -> None:
    rc = main(["match", str(photo(TUM0)), str(photo(TUM1)), "--weights", str(weights_file), "--max-size", "320",
               "--threshold", "0", "--max-matches", "50", "--out", str(tmp_path / "fig.png"),
               "--save-matches", str(tmp_path / "m.npz")])
    out = capsys.readouterr().out
    assert rc == 0 and "Matches: 50" in out
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = np.load(tmp_path / "m.npz")
    assert m["keypoints0"].shape == (50, 2) and m["keypoints0"].dtype == np.float32 and m["confidence"].shape == (50,)
    rc = main(["match", str(photo(TUM0)), str(photo(TUM1)), "--weights", str(weights_file), "--max-size", "160",
               "--save-matches", str(tmp_path / "m.json"), "--out", str(tmp_path / "fig.pdf")])
    assert rc == 0
    assert set(json.loads((tmp_path / "m.json").read_text())) == {"keypoints0", "keypoints1", "confidence"}
    assert (tmp_path / "fig.pdf").read_bytes()[:4] == b"%PDF"


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda d: d / "missing.jpg", "does not exist"),
        (lambda d: (d / "text.jpg").write_text("hello") and d / "text.jpg", "not an image"),
        (lambda d: _tiny_png(d), "too small"),
    ],
)
def test_bad_input_is_one_clear_line(make, expected: str, weights_file: Path, tmp_path: Path, capsys) -> None:
    bad = make(tmp_path)
    rc = main(["match", str(bad), str(photo(TUM1)), "--weights", str(weights_file)])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_wrong_checkpoint_is_one_clear_line(weights_file: Path, capsys) -> None:
    rc = main(["match", str(photo(TUM0)), str(photo(TUM1)), "--weights", str(weights_file), "--preset", "outdoor_ds"])
    err = capsys.readouterr().err
    assert rc == 2 and "tiny_ds" in err and "outdoor_ds" in err and len(err.strip().splitlines()) == 1


def test_weights_list_and_info(weights_file: Path, capsys) -> None:
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("outdoor_ds", "indoor_ds", "indoor_ds_new", "outdoor_ot", "indoor_ot", "tiny_ds"):
        assert name in out
    assert main(["weights", "info", str(weights_file)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["fits_presets"] == ["tiny_ds"] and len(info["sha256"]) == 64


def _tiny_png(d: Path) -> Path:
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), np.uint8)).save(d / "tiny.png")
    return d / "tiny.png"
