"""Relative pose on ScanNet-1500 and MegaDepth-1500, read from LoFTR's official index files.

Assumed formats (those of zju3dv/LoFTR ``src/datasets/scannet.py``, ``megadepth.py`` and the ``*_test_1500``
assets):

* ScanNet: ``test.npz`` with ``name`` (N, 4) int rows [scene_id, sub_scene, stem0, stem1]; image
  ``{root}/scene{scene_id:04d}_{sub_scene:02d}/color/{stem}.jpg`` (``{root}/scans_test/...`` is tried too);
  ``rel_pose`` (N, 12) or (N, 3, 4) = the first three rows of T_0to1 when the file has it, else the camera-to-world
  poses ``{scene}/pose/{stem}.txt`` give T_0to1 = inv(P1) @ P0. ``intrinsics.npz`` maps a scene name to K (3, 3)
  of the image resized to 640x480 (LoFTR feeds ScanNet at 640x480); K is rescaled to the actual image size.
* MegaDepth: scene-info ``.npz`` files (pickled object arrays: only open trusted files) with ``image_paths``
  (relative to root), ``intrinsics`` (N, 3, 3) of the original images, ``poses`` (N, 4, 4) world-to-camera and
  ``pair_infos`` [((i, j), overlap, central_matches)]; T_0to1 = poses[j] @ inv(poses[i]). The index is one such
  file, a folder of them, or a list file of their names (with or without ``.npz``).

Protocol (LoFTR paper): ScanNet at 640x480, MegaDepth at longest side 840 (1152 also used); essential matrix by
RANSAC with a 0.5 px threshold divided by the mean focal length, confidence 0.99999; per pair the pose error is
max(rotation error, translation-direction error) (inf when estimation fails) and the table gives its AUC at
5/10/20 degrees; matching precision = fraction of matches with normalised symmetric epipolar error below 5e-4
(ScanNet) / 1e-4 (MegaDepth), 0 for a pair without matches. Keypoints come back in original pixels, so the
original-image K is used whatever size the matcher ran at.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LoFTRError
from ..geometry import PoseResult, epipolar_error_normalized, estimate_relative_pose, pose_auc, pose_error
from .baselines import PairMatcher, PairMatches
from .report import BenchmarkResult, Column, Loaded, Record, image_size, mean_of, run_benchmark

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoseProtocol:
    """How a pose benchmark is run and scored (see the module doc); ``resize``/``max_size`` are the default
    matching sizes."""

    name: str
    epipolar_threshold: float
    resize: tuple[int, int] | None = None
    max_size: int | None = None
    ransac_threshold: float = 0.5
    confidence: float = 0.99999
    method: str = "ransac"
    auc_thresholds: tuple[float, ...] = (5.0, 10.0, 20.0)
    orders: int = 1  # >1: the estimator also runs on orders-1 seeded shuffles of each pair's matches (see score_pose)
    shuffle_seed: int = 0  # seed of those shuffles: another seed draws other orders (new RANSAC samples)


PROTOCOLS = {
    "scannet": PoseProtocol("scannet", epipolar_threshold=5e-4, resize=(640, 480)),
    "megadepth": PoseProtocol("megadepth", epipolar_threshold=1e-4, max_size=840),
}


@dataclass(frozen=True, eq=False)
class PosePair:
    """Two images with intrinsics K0, K1 (3, 3) of the original images and T_0to1 (4, 4): X1 = R X0 + t."""

    name: str
    split: str
    image0: Path
    image1: Path
    K0: np.ndarray
    K1: np.ndarray
    T_0to1: np.ndarray


# ------------------------------------------------------------------------------------------------------ readers
def _first_existing(candidates: Sequence[Path]) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise LoFTRError(f"{what} {path} does not exist")
    return path


def scale_intrinsics(K: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """K (3, 3) of an image of size ``from_size`` (W, H) → K of the same view resized to ``to_size``
    (pixel-centre convention: x' = (x + 0.5) * s - 0.5)."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    A = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return A @ np.asarray(K, np.float64)


def _rel_pose(row: np.ndarray) -> np.ndarray:
    r = np.asarray(row, np.float64).reshape(-1)
    if r.size not in (12, 16):
        raise LoFTRError(f"rel_pose rows must hold 12 (3x4) or 16 (4x4) numbers, got {r.size}")
    T = np.eye(4)
    T[:3] = r[:12].reshape(3, 4)
    return T


def read_scannet(index: str | Path, root: str | Path, intrinsics: str | Path | None = None,
                 nominal_size: tuple[int, int] = (640, 480)) -> Loaded[PosePair]:
    """ScanNet pairs of ``index`` (test.npz) with images under ``root``; ``intrinsics`` defaults to
    ``intrinsics.npz`` next to the index. Pairs whose files are missing are skipped (and named)."""
    index, root = _require_file(Path(index), "ScanNet index"), Path(root)
    intrinsics = _require_file(Path(intrinsics) if intrinsics else index.parent / "intrinsics.npz",
                               "ScanNet intrinsics file")
    with np.load(index) as data:
        if "name" not in data.files:
            raise LoFTRError(f"{index} has no 'name' array: not a LoFTR ScanNet index")
        names, rel = data["name"], (data["rel_pose"] if "rel_pose" in data.files else None)
    with np.load(intrinsics) as data:
        Ks = {k: np.asarray(data[k], np.float64).reshape(3, 3) for k in data.files}
    pairs, skipped = [], []
    for i, (scene_id, sub, stem0, stem1) in enumerate(np.asarray(names).tolist()):
        scene = f"scene{int(scene_id):04d}_{int(sub):02d}"
        name = f"{scene}/{stem0}-{stem1}"
        dirs = [root / scene, root / "scans_test" / scene]
        images = [_first_existing([d / "color" / f"{s}.jpg" for d in dirs]) for s in (stem0, stem1)]
        if rel is not None:
            T = _rel_pose(rel[i])
        else:
            poses = [_first_existing([d / "pose" / f"{s}.txt" for d in dirs]) for s in (stem0, stem1)]
            T = None if None in poses else np.linalg.inv(np.loadtxt(poses[1])) @ np.loadtxt(poses[0])
        if None in images or T is None:
            skipped.append(name)
            continue
        if scene not in Ks:
            raise LoFTRError(f"{intrinsics} has no intrinsics for {scene}")
        K0, K1 = (scale_intrinsics(Ks[scene], nominal_size, image_size(p)) for p in images)
        pairs.append(PosePair(name, "scannet", images[0], images[1], K0, K1, T))
    return _found(pairs, skipped, f"ScanNet index {index}", root)


def _megadepth_files(index: Path, npz_dir: Path | None) -> list[Path]:
    if index.is_dir():
        return sorted(index.glob("*.npz"))
    _require_file(index, "MegaDepth index")
    if index.suffix == ".npz":
        return [index]
    folder = npz_dir or index.parent
    names = [line.split()[0] for line in index.read_text().splitlines() if line.strip()]
    return [_require_file(folder / (n if n.endswith(".npz") else n + ".npz"), "MegaDepth scene info") for n in names]


def read_megadepth(index: str | Path, root: str | Path, npz_dir: str | Path | None = None) -> Loaded[PosePair]:
    """MegaDepth pairs of the scene-info file(s) ``index`` (see the module doc) with images under ``root``
    (``Undistorted_SfM/...`` paths; a root inside Undistorted_SfM works too)."""
    root = Path(root)
    files = _megadepth_files(Path(index), Path(npz_dir) if npz_dir else None)
    if not files:
        raise LoFTRError(f"no MegaDepth scene-info .npz files in {index}")
    pairs, skipped = [], []
    for f in files:
        with np.load(f, allow_pickle=True) as info:  # object arrays: pickled
            missing = {"image_paths", "intrinsics", "poses", "pair_infos"} - set(info.files)
            if missing:
                raise LoFTRError(f"{f} is not a MegaDepth scene-info file (missing {', '.join(sorted(missing))})")
            paths, Ks, poses, infos = (info[k] for k in ("image_paths", "intrinsics", "poses", "pair_infos"))
        for pair_info in infos:
            i, j = (int(v) for v in pair_info[0])
            rel = [Path(str(paths[i])), Path(str(paths[j]))]
            name = f"{f.stem}/{rel[0].stem}-{rel[1].stem}"
            images = [_first_existing([root / r, root / Path(*r.parts[1:])] if len(r.parts) > 1 else [root / r])
                      for r in rel]
            if None in images:
                skipped.append(name)
                continue
            T = np.asarray(poses[j], np.float64) @ np.linalg.inv(np.asarray(poses[i], np.float64))
            pairs.append(PosePair(name, "megadepth", images[0], images[1], np.asarray(Ks[i], np.float64),
                                  np.asarray(Ks[j], np.float64), T))
    return _found(pairs, skipped, f"MegaDepth index {index}", root)


def _found(pairs: list[PosePair], skipped: list[str], what: str, root: Path) -> Loaded[PosePair]:
    if not pairs:
        raise LoFTRError(f"none of the {len(skipped)} pairs of {what} has its files under {root}")
    if skipped:
        log.warning("%d pairs skipped (files missing under %s), e.g. %s", len(skipped), root, skipped[0])
    return Loaded(tuple(pairs), tuple(skipped))


# ------------------------------------------------------------------------------------------------------ metrics
def score_pose(pair: PosePair, matches: PairMatches, protocol: PoseProtocol) -> Record:
    """Per-pair pose error (degrees; inf on failure), its rotation/translation parts, inliers and precision; with
    ``protocol.orders`` > 1 also ``pose_errors``, the pose error of each order of the matches (the given one first)."""
    est, (err_R, err_t) = _estimate(pair, matches.kpts0, matches.kpts1, protocol)
    precision = 0.0
    if len(matches):
        epi = epipolar_error_normalized(matches.kpts0, matches.kpts1, pair.T_0to1, pair.K0, pair.K1)
        precision = float(np.mean(epi < protocol.epipolar_threshold))
    record: Record = {"pose_error": max(err_R, err_t), "R_error": err_R, "t_error": err_t,
                      "inliers": 0 if est is None else est.num_inliers, "precision": precision}
    if protocol.orders > 1:
        # RANSAC is deterministic for one input but chaotic in it: the same matches in another order give another
        # pose, and a benchmark's AUC moves by points; seeded shuffles, so a run repeats exactly
        rng = np.random.default_rng(protocol.shuffle_seed)
        orders = (rng.permutation(len(matches)) for _ in range(protocol.orders - 1))
        record["pose_errors"] = [record["pose_error"], *(
            max(_estimate(pair, matches.kpts0[o], matches.kpts1[o], protocol)[1]) for o in orders)]
    return record


def _estimate(pair: PosePair, kpts0: np.ndarray, kpts1: np.ndarray, protocol: PoseProtocol,
              ) -> tuple[PoseResult | None, tuple[float, float]]:
    """The protocol's relative pose from (M, 2) matches and its (rotation, translation) errors (inf on failure)."""
    est = estimate_relative_pose(kpts0, kpts1, pair.K0, pair.K1, threshold=protocol.ransac_threshold,
                                 confidence=protocol.confidence, method=protocol.method)
    return est, ((np.inf, np.inf) if est is None else pose_error(est.R, est.t, pair.T_0to1))


def aggregate_pose(records: list[Record], protocol: PoseProtocol) -> dict[str, float]:
    """Pose-error AUC at each threshold and the mean matching precision; with ``protocol.orders`` > 1 also the mean
    and std over the orders of the AUC (``auc@T_mean``, ``auc@T_std``)."""
    aucs = pose_auc([r["pose_error"] for r in records], protocol.auc_thresholds)
    out = {**{f"auc@{t:g}": v for t, v in aucs.items()}, "precision": mean_of(records, "precision")}
    if protocol.orders > 1 and records:
        per_order = [pose_auc([r["pose_errors"][k] for r in records], protocol.auc_thresholds)
                     for k in range(protocol.orders)]
        for t in protocol.auc_thresholds:
            values = [a[t] for a in per_order]
            out[f"auc@{t:g}_mean"], out[f"auc@{t:g}_std"] = float(np.mean(values)), float(np.std(values))
    return out


def run(loaded: Loaded[PosePair], matchers: Sequence[PairMatcher], protocol: PoseProtocol, *,
        progress: bool = True, config: dict[str, Any] | None = None) -> BenchmarkResult:
    """Every matcher on every pair, scored with ``protocol``."""
    columns = [*(Column(f"auc@{t:g}", f"AUC@{t:g}°") for t in protocol.auc_thresholds),
               *(Column(f"auc@{t:g}_mean", f"AUC@{t:g}° ({protocol.orders} orders)") for t in protocol.auc_thresholds
                 if protocol.orders > 1),
               Column("precision", f"P@{protocol.epipolar_threshold:g}")]
    title = f"Relative pose, {protocol.name} (essential matrix, {protocol.method} {protocol.ransac_threshold:g} px)"
    cfg = {"protocol": asdict(protocol), **(config or {})}
    return run_benchmark(f"pose-{protocol.name}", title, loaded, matchers, partial(score_pose, protocol=protocol),
                         partial(aggregate_pose, protocol=protocol), columns, config=cfg, progress=progress)


__all__ = ["PoseProtocol", "PROTOCOLS", "PosePair", "read_scannet", "read_megadepth", "scale_intrinsics",
           "score_pose", "aggregate_pose", "run"]
