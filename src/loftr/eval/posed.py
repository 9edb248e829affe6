"""Relative pose on real multi-view scenes with known cameras (``../shared/data/posed``: fox, castle-P19, castle-P30).

Format: one folder per scene with ``images/*`` and ``cameras.json`` = ``{image name: {"K": 3x3, "R": 3x3, "t": [3]}}``
(OpenCV: ``x_cam = R @ X + t``, pixel = K @ x_cam, pixel centres at integers, undistorted images). A root holding
such folders gives all of them; a scene folder gives one.

Pairs: views sorted by name, view i with view i + gap for every ``gap`` (frame gaps: 1 is a small baseline, 8 a wide
one), starting every ``stride`` views. T_0to1 = [R_b | t_b] @ inv([R_a | t_a]). Scoring is the ScanNet/MegaDepth-1500
protocol (:mod:`.pose`): essential matrix by RANSAC at 0.5 px over the mean focal, pose error max(angle of R, angle
of t), AUC at 5/10/20°, and the share of matches within 5e-4 normalised epipolar error; the split is the scene.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LoFTRError
from ..io import DEFAULT_MAX_SIZE
from .baselines import PairMatcher
from .pose import PosePair, PoseProtocol
from .pose import run as run_pose
from .report import BenchmarkResult, Loaded

PROTOCOL = PoseProtocol("posed", epipolar_threshold=5e-4, max_size=DEFAULT_MAX_SIZE)
DEFAULT_GAPS = (1, 2, 4, 8)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff"}


def scene_folders(root: str | Path) -> list[Path]:
    """The scene folders (holding ``cameras.json``) of ``root``, or ``root`` itself when it is one."""
    root = Path(root)
    if (root / "cameras.json").is_file():
        return [root]
    if not root.is_dir():
        raise LoFTRError(f"posed data folder {root} does not exist")
    scenes = sorted(p for p in root.iterdir() if (p / "cameras.json").is_file())
    if not scenes:
        raise LoFTRError(f"no scene folders with cameras.json in {root}")
    return scenes


def read_cameras(scene: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{image name: (K (3, 3), world-to-camera (4, 4))}`` of a scene's ``cameras.json``."""
    path = scene / "cameras.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LoFTRError(f"cannot read {path}: {exc}") from None
    cams = {}
    for name, cam in raw.items():
        try:
            K = np.asarray(cam["K"], np.float64).reshape(3, 3)
            T = np.eye(4)
            T[:3, :3] = np.asarray(cam["R"], np.float64).reshape(3, 3)
            T[:3, 3] = np.asarray(cam["t"], np.float64).reshape(3)
        except (KeyError, TypeError, ValueError) as exc:
            raise LoFTRError(f"{path}: camera {name!r} needs K (3x3), R (3x3) and t (3): {exc}") from None
        cams[name] = (K, T)
    return cams


def read_posed(root: str | Path, gaps: Sequence[int] = DEFAULT_GAPS, stride: int = 3,
               scenes: Sequence[str] | None = None) -> Loaded[PosePair]:
    """Pairs of every scene under ``root`` (or of those named in ``scenes``) at the frame ``gaps``."""
    if not gaps or min(gaps) < 1 or stride < 1:
        raise LoFTRError("frame gaps and the stride must be at least 1")
    folders = scene_folders(root)
    if scenes:
        unknown = sorted(set(scenes) - {f.name for f in folders})
        if unknown:
            raise LoFTRError(f"no scene {', '.join(unknown)} in {root} (there: {', '.join(f.name for f in folders)})")
        folders = [f for f in folders if f.name in set(scenes)]
    pairs, skipped = [], []
    for folder in folders:
        cams = read_cameras(folder)
        images = sorted(p for p in (folder / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
            if (folder / "images").is_dir() else []
        views = [p for p in images if p.name in cams]
        skipped += [f"{folder.name}/{p.name}" for p in images if p.name not in cams]
        for gap in sorted(set(int(g) for g in gaps)):
            for i in range(0, len(views) - gap, stride):
                a, b = views[i], views[i + gap]
                (K0, T0), (K1, T1) = cams[a.name], cams[b.name]
                pairs.append(PosePair(f"{folder.name}/{a.stem}-{b.stem}", folder.name, a, b, K0, K1,
                                      T1 @ np.linalg.inv(T0)))
    if not pairs:
        raise LoFTRError(f"no image pairs with cameras found under {root}")
    return Loaded(tuple(pairs), tuple(skipped))


def run(loaded: Loaded[PosePair], matchers: Sequence[PairMatcher], protocol: PoseProtocol = PROTOCOL, *,
        progress: bool = True, config: dict[str, Any] | None = None) -> BenchmarkResult:
    """Every matcher on every pair, scored with the pose ``protocol``; one row per scene too."""
    return run_pose(loaded, matchers, protocol, progress=progress, config=config)


__all__ = ["PROTOCOL", "DEFAULT_GAPS", "scene_folders", "read_cameras", "read_posed", "run"]
