from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loftr import ImageError
from loftr.cli import main

from .conftest import TUM0, TUM1, photo


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
    assert rc == 1 and expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_wrong_checkpoint_is_one_clear_line(weights_file: Path, capsys) -> None:
    rc = main(["match", str(photo(TUM0)), str(photo(TUM1)), "--weights", str(weights_file), "--preset", "outdoor_ds"])
    err = capsys.readouterr().err
    assert rc == 1 and "tiny_ds" in err and "outdoor_ds" in err and len(err.strip().splitlines()) == 1


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


@pytest.mark.parametrize("argv,expected", [
    (["match", "only_one.png"], "loftr match: error: the following arguments are required: image1"),
    (["no-such-command"], "loftr: error: argument command: invalid choice"),
    (["match", "a.png", "b.png", "--max-size", "big"], "argument --max-size: invalid int value: 'big'"),
    (["match", "a.png", "b.png", "--max-size", "4"], "loftr: error: image file a.png does not exist"),  # files first
    (["match", "{img}", "{img}", "--max-size", "4"], "loftr: error: max_size must be at least 8 px"),
    (["match", "{img}", "{img}", "--threshold", "nan"], "loftr: error: threshold must lie in [0, 1], got nan"),
    (["match", "{img}", "{img}", "--out", "fig.gif"], "loftr: error: --out must end in .pdf, .png or .svg"),
])
def test_usage_errors_exit_1_with_one_line(argv: list[str], expected: str, tmp_path: Path, capsys) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "img.png")
    rc = main([a.format(img=tmp_path / "img.png") for a in argv])
    err = capsys.readouterr().err
    assert rc == 1 and expected in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_help_exits_0(capsys) -> None:
    assert main(["match", "-h"]) == 0
    assert "--max-pixels" in capsys.readouterr().out


def _raising(exc: BaseException):
    def cmd(args):
        raise exc

    return cmd


@pytest.mark.parametrize("exc,rc,expected", [
    (ZeroDivisionError("boom"), 2, "loftr: internal error: ZeroDivisionError: boom -- this is a bug in loftr, please "
                                   "report it"),
    (KeyError("state"), 2, "loftr: internal error: KeyError: 'state'"),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 96000000000 bytes"), 1,
     "loftr: error: out of memory"),
    (MemoryError(), 1, "loftr: error: out of memory: use a smaller --max-size or --max-pixels"),
    (PermissionError(13, "Permission denied", "out.png"), 1, "loftr: error: [Errno 13] Permission denied: 'out.png'"),
    (ImageError("Caught ImageError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
                "  File \"x.py\", line 1, in f\nloftr.errors.ImageError: photos/a.png is truncated or corrupt: eof"),
     1, "loftr: error: photos/a.png is truncated or corrupt: eof"),
    (KeyboardInterrupt(), 130, "loftr: interrupted"),
])
def test_exit_codes_and_one_line_messages(exc: BaseException, rc: int, expected: str, monkeypatch, capsys) -> None:
    import loftr.cli

    monkeypatch.delenv("LOFTR_DEBUG", raising=False)
    monkeypatch.setattr(loftr.cli, "cmd_weights", _raising(exc))
    assert main(["weights", "list"]) == rc
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()] and expected in err and "Traceback" not in err


def test_debug_prints_the_traceback(monkeypatch, capsys) -> None:
    import loftr.cli

    monkeypatch.setattr(loftr.cli, "cmd_weights", _raising(ZeroDivisionError("boom")))
    monkeypatch.delenv("LOFTR_DEBUG", raising=False)
    assert main(["--debug", "weights", "list"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().endswith("with the traceback above")
    monkeypatch.setenv("LOFTR_DEBUG", "1")
    assert main(["weights", "list"]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    monkeypatch.setattr(loftr.cli, "cmd_weights", _raising(ImageError("x.png is empty (0 bytes)")))
    assert main(["weights", "list"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith("loftr: error: x.png is empty (0 bytes)")


def test_the_installed_command_exits_1_on_a_user_error(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "LOFTR_DEBUG"}
    run = subprocess.run([sys.executable, "-m", "loftr.cli", "match", str(tmp_path / "a.png"), str(tmp_path / "b.png")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 1 and run.stderr == f"loftr: error: image file {tmp_path / 'a.png'} does not exist\n"


def test_match_reference_flag_gives_the_same_matches(tmp_path: Path) -> None:
    args = ["match", str(photo(TUM0)), str(photo(TUM1)), "--max-size", "320"]  # the bundled weights
    assert main([*args, "--reference", "--save-matches", str(tmp_path / "ref.npz")]) == 0
    assert main([*args, "--save-matches", str(tmp_path / "fast.npz")]) == 0  # the fast path, by default
    assert main([*args, "--fast", "--save-matches", str(tmp_path / "old.npz")]) == 0  # old scripts keep working
    ref, fast = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "fast.npz")
    assert len(ref["confidence"]) == len(fast["confidence"]) > 0
    order_r, order_f = np.lexsort(ref["keypoints0"].T), np.lexsort(fast["keypoints0"].T)
    np.testing.assert_allclose(ref["keypoints0"][order_r], fast["keypoints0"][order_f], atol=1e-3)
    np.testing.assert_allclose(ref["keypoints1"][order_r], fast["keypoints1"][order_f], atol=1e-3)
