"""Known camera intrinsics for ``loftr sfm``: ``--camera MODEL PARAMS`` or an intrinsics file.

Parameters are in ORIGINAL image pixels (the images as they are on disk, EXIF orientation applied), whatever size the
matching runs at: the match file's keypoints are in original pixels too, so the intrinsics apply unchanged.

Forms understood (:func:`parse_camera`):

- ``MODEL p1,p2,...``: a COLMAP camera model and its parameters (``PINHOLE fx,fy,cx,cy``, ``SIMPLE_PINHOLE
  f,cx,cy``, ``SIMPLE_RADIAL f,cx,cy,k``, ``OPENCV fx,fy,cx,cy,k1,k2,p1,p2``, ...), principal point in the
  package's convention (OpenCV's: pixel centres at integers, the first pixel's centre at 0, 0);
- a file holding that same line, or a 3x3 matrix K (9 numbers: a PINHOLE camera, OpenCV convention), or a COLMAP
  ``cameras.txt`` line ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS...`` (COLMAP's convention: the first pixel's centre
  at 0.5, 0.5; the parameters are rescaled when the images have another size than WIDTH x HEIGHT).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import PipelineError, require


@dataclass(frozen=True)
class CameraSpec:
    """A known camera: COLMAP ``model`` name and ``params`` in COLMAP's pixel convention (half-integer centres);
    ``size`` (W, H) the images the parameters belong to, None = any size (used as given)."""

    model: str
    params: tuple[float, ...]
    size: tuple[int, int] | None = None

    def for_size(self, width: int, height: int) -> tuple[float, ...]:
        """The parameters for images of ``width`` x ``height``: rescaled from :attr:`size` when it differs (focal
        lengths and principal point scale with the image, distortion coefficients do not)."""
        if self.size is None or self.size == (width, height):
            return self.params
        pycolmap = require("pycolmap", "pycolmap", "SfM")
        cam = pycolmap.Camera.create_from_model_name(0, self.model, 1.0, *self.size)
        cam.params = list(self.params)
        cam.rescale(width, height)
        return tuple(float(v) for v in cam.params)


def _numbers(text: str) -> list[float]:
    try:
        return [float(v) for v in re.split(r"[\s,;]+", text.strip()) if v]
    except ValueError:
        raise PipelineError(f"camera parameters must be numbers, got {text!r}") from None


def _principal_point(model: str) -> list[int]:
    pycolmap = require("pycolmap", "pycolmap", "SfM")
    return list(pycolmap.Camera.create_from_model_name(0, model, 1.0, 1, 1).principal_point_idxs())


def make_camera(model: str, params: Sequence[float], size: tuple[int, int] | None = None,
                colmap_convention: bool = False) -> CameraSpec:
    """A checked :class:`CameraSpec`; ``params`` in the package's pixel convention unless ``colmap_convention``."""
    pycolmap = require("pycolmap", "pycolmap", "SfM")
    model = model.strip().upper()
    try:
        cam = pycolmap.Camera.create_from_model_name(0, model, 1.0, 1, 1)
    except (ValueError, RuntimeError):
        raise PipelineError(f"unknown camera model {model!r}; use a COLMAP model such as PINHOLE or "
                            "SIMPLE_RADIAL") from None
    if len(params) != len(cam.params):
        raise PipelineError(f"camera model {model} takes {len(cam.params)} parameters ({cam.params_info}), got "
                            f"{len(params)}")
    values = [float(v) for v in params]
    if not colmap_convention:
        for i in _principal_point(model):
            values[i] += 0.5
    focal = [values[i] for i in cam.focal_length_idxs()]
    if not all(f > 0 for f in focal):
        raise PipelineError(f"camera focal lengths must be positive, got {focal}")
    return CameraSpec(model, tuple(values), size)


def parse_camera(words: Sequence[str]) -> CameraSpec:
    """The camera of ``--camera``: ``[MODEL, PARAMS]`` or ``[FILE]`` (forms in the module doc)."""
    if len(words) == 2:
        return make_camera(words[0], _numbers(words[1]))
    if len(words) != 1:
        raise PipelineError("--camera takes MODEL PARAMS (e.g. PINHOLE 718.9,718.9,607.2,185.2) or one file")
    path = Path(words[0])
    if not path.is_file():
        raise PipelineError(f"camera file {path} does not exist (or give MODEL PARAMS, e.g. PINHOLE fx,fy,cx,cy)")
    return read_camera_file(path)


def read_camera_file(path: str | Path) -> CameraSpec:
    """The first camera of an intrinsics file (forms in the module doc); comment lines start with '#'."""
    lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise PipelineError(f"camera file {path} holds no camera")
    first = lines[0].split()
    if len(first) >= 2 and first[0].isdigit() and first[1][:1].isalpha():  # COLMAP cameras.txt
        if len(first) < 5:
            raise PipelineError(f"{path}: a cameras.txt line needs CAMERA_ID MODEL WIDTH HEIGHT PARAMS")
        numbers = _numbers(" ".join(first[2:]))
        return make_camera(first[1], numbers[2:], (int(numbers[0]), int(numbers[1])), colmap_convention=True)
    if first[0][:1].isalpha():  # MODEL p1,p2,...
        return make_camera(first[0], _numbers(" ".join(first[1:])))
    numbers = _numbers(" ".join(lines))
    if len(numbers) != 9 or numbers[1] != 0 or numbers[3] != 0 or numbers[6:] != [0, 0, 1]:
        raise PipelineError(f"{path}: expected MODEL PARAMS, a cameras.txt line or a 3x3 matrix K "
                            "[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]")
    return make_camera("PINHOLE", [numbers[0], numbers[4], numbers[2], numbers[5]])


__all__ = ["CameraSpec", "make_camera", "parse_camera", "read_camera_file"]
