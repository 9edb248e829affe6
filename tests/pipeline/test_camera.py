"""Known intrinsics for `loftr sfm --camera`: the forms understood, the pixel conventions and the errors."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pycolmap")

from loftr.pipeline import PipelineError  # noqa: E402
from loftr.pipeline.camera import make_camera, parse_camera, read_camera_file  # noqa: E402


def test_model_and_params_in_the_package_convention_get_colmaps_half_pixel() -> None:
    cam = parse_camera(["pinhole", "718.9,718.8,607.2,185.2"])
    assert cam.model == "PINHOLE" and cam.size is None
    assert cam.params == pytest.approx((718.9, 718.8, 607.7, 185.7))
    assert cam.for_size(1241, 376) == cam.params  # no size given: used as is
    radial = parse_camera(["SIMPLE_RADIAL", "500 320 240 -0.05"])
    assert radial.params == pytest.approx((500, 320.5, 240.5, -0.05))  # distortion untouched


def test_files_k_matrix_model_line_and_colmap_cameras_txt(tmp_path: Path) -> None:
    k = tmp_path / "K.txt"
    k.write_text("# intrinsics\n700 0 600\n0 710 180\n0 0 1\n")
    assert read_camera_file(k).params == pytest.approx((700, 710, 600.5, 180.5))
    line = tmp_path / "cam.txt"
    line.write_text("SIMPLE_PINHOLE 700, 600, 180\n")
    assert parse_camera([str(line)]).params == pytest.approx((700, 600.5, 180.5))
    txt = tmp_path / "cameras.txt"
    txt.write_text("# Camera list\n1 PINHOLE 2482 752 1437.8 1437.6 1214.9 371.4\n")
    cam = parse_camera([str(txt)])
    assert cam.size == (2482, 752) and cam.params == pytest.approx((1437.8, 1437.6, 1214.9, 371.4))  # COLMAP's own
    assert cam.for_size(1241, 376) == pytest.approx((718.9, 718.8, 607.45, 185.7))  # rescaled to the images


@pytest.mark.parametrize("words, message", [
    (["PINHOLE", "700,700,600"], "takes 4 parameters"),
    (["FISHY", "1,2,3"], "unknown camera model"),
    (["PINHOLE", "700,x,600,180"], "must be numbers"),
    (["PINHOLE", "0,700,600,180"], "must be positive"),
    (["a", "b", "c"], "MODEL PARAMS"),
    (["/no/such/camera.txt"], "does not exist"),
])
def test_bad_cameras_are_one_clear_error(words: list[str], message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        parse_camera(words)


def test_a_file_that_is_no_camera(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n")
    with pytest.raises(PipelineError, match="3x3 matrix"):
        read_camera_file(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(PipelineError, match="holds no camera"):
        read_camera_file(empty)
    assert make_camera("SIMPLE_PINHOLE", [5, 1, 1]).model == "SIMPLE_PINHOLE"
