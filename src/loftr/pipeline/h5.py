"""The HDF5 output of ``loftr match-pairs``: raw per-pair matches, per-image keypoints and hloc-style matches.

One file holds everything (hloc's readers index by name, so pass it as both the features and the matches file)::

    /{image name}/keypoints          (K, 2) float32  per-image keypoints, original pixels, pixel centres at integers
    /{image name}/scores             (K,)   float32  best confidence of the raw keypoints merged into each one
    /{image name}/image_size         (2,)   int32    (W, H) of the original image (EXIF orientation applied)
    /{pair key}/matches0             (K0,)  int32    index into image1's keypoints, -1 = unmatched
    /{pair key}/matching_scores0     (K0,)  float32  confidence of that match, 0 = unmatched
    /pairs/{pair key}/keypoints0     (M, 2) float32  raw matches of the pair, most confident first
    /pairs/{pair key}/keypoints1     (M, 2) float32
    /pairs/{pair key}/confidence     (M,)   float32
    root attrs: format, settings (JSON: model fingerprint and matching options), quantize

``pair key`` is hloc's ``names_to_pair``: ``name0/name1`` with '/' inside a name replaced by '-'; every
``/pairs/{pair key}`` group also carries the exact ``name0``, ``name1``, the (W, H) ``size0``, ``size1`` and the
(sx, sy) network-input / original ``scale0``, ``scale1`` as attrs.
Chunk and per-rank part files hold only ``/pairs`` and the root attrs. Image names may not start with ``pairs/``
or be ``pairs``.

Per-image keypoints (LoFTR has no detector, so each pair finds its own points): every raw keypoint of an image, from
all its pairs, is snapped to a grid of ``quantize`` pixels of the network input (``round(xy * scale / q)``, so the
grid follows the matching resolution, whatever the original size); the keypoints of one grid cell merge into one,
placed at the most confident of them. The default, :data:`DEFAULT_QUANTIZE` = 1 network pixel, is about LoFTR's
precision: an image's keypoints as image0 of its pairs lie on the coarse grid (every 8 network pixels) and are
shared by those pairs exactly, while as image1 they are refined to sub-pixels, so one scene point seen from two
pairs lands within a pixel or so. Two-way matching (``Matcher(two_way=True)``, the command's default) puts the grid
on both sides of every pair, so that the grid keypoints are shared by all of an image's pairs. A coarser grid (4,
the old default: 8 original pixels for a 1241-px frame matched at 640) moves a keypoint of a track by up to half a cell, past COLMAP's 4-px thresholds, and merges distinct points.
A pair's raw matches then become index matches between merged keypoints, one-to-one: each keypoint of image0 keeps
its most confident match, then each keypoint of image1 keeps the most confident of those. ``quantize = 0`` merges
only identical coordinates.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from . import PipelineError, require

log = logging.getLogger(__name__)

FORMAT = "loftr-pairs-h5/1"
DEFAULT_QUANTIZE = 1.0  # network-input pixels (see the module doc)


@dataclass(frozen=True, eq=False)
class PairResult:
    """Raw matches of one pair in original pixels: keypoints0/1 (M, 2) float32, confidence (M,) float32, most
    confident first; size0/1 the (W, H) of the original images, scale0/1 the (sx, sy) network / original."""

    name0: str
    name1: str
    keypoints0: np.ndarray
    keypoints1: np.ndarray
    confidence: np.ndarray
    size0: tuple[int, int]
    size1: tuple[int, int]
    scale0: tuple[float, float] = (1.0, 1.0)
    scale1: tuple[float, float] = (1.0, 1.0)

    @property
    def key(self) -> str:
        return pair_key(self.name0, self.name1)


def pair_key(name0: str, name1: str) -> str:
    """hloc's pair key: ``name0/name1`` with '/' inside the names replaced by '-'."""
    return f"{name0.replace('/', '-')}/{name1.replace('/', '-')}"


def _h5py():
    return require("h5py", "h5py", "writing HDF5 match files")


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _write_raw(f, results: Iterable[PairResult]) -> None:
    root = f.require_group("pairs")
    for r in results:
        g = root.create_group(r.key)
        g.create_dataset("keypoints0", data=np.asarray(r.keypoints0, np.float32).reshape(-1, 2))
        g.create_dataset("keypoints1", data=np.asarray(r.keypoints1, np.float32).reshape(-1, 2))
        g.create_dataset("confidence", data=np.asarray(r.confidence, np.float32).reshape(-1))
        g.attrs["name0"], g.attrs["name1"] = r.name0, r.name1
        g.attrs["size0"], g.attrs["size1"] = np.asarray(r.size0, np.int32), np.asarray(r.size1, np.int32)
        g.attrs["scale0"], g.attrs["scale1"] = np.asarray(r.scale0, np.float64), np.asarray(r.scale1, np.float64)


def atomic_write(path: Path, fill: Callable[[Any], None], attrs: Mapping[str, object]) -> Path:
    """Create ``path`` via a temporary file and ``os.replace``: readers see the old file or the whole new one."""
    h5py = _h5py()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        fill(f)
    _fsync(tmp)
    os.replace(tmp, path)
    return path


def write_raw_file(path: Path, results: Iterable[PairResult], settings: str) -> Path:
    """A chunk or part file: raw pairs only, written atomically."""
    results = list(results)
    return atomic_write(path, lambda f: _write_raw(f, results), {"format": FORMAT, "settings": settings})


def read_settings(path: str | Path) -> str:
    """The settings JSON a file was written with; a file that is not ours raises :class:`PipelineError`."""
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise PipelineError(f"{path} is not a loftr match file (format {f.attrs.get('format')!r})")
            return str(f.attrs["settings"])
    except OSError as exc:
        raise PipelineError(f"cannot read {path}: {exc}") from None


def read_raw(path: str | Path) -> dict[str, PairResult]:
    """Every raw pair of a chunk, part or final file, by pair key."""
    h5py = _h5py()
    out: dict[str, PairResult] = {}
    with h5py.File(path, "r") as f:
        root = f.get("pairs")
        if root is None:
            return out
        for first in root.values():
            for g in first.values():
                r = PairResult(str(g.attrs["name0"]), str(g.attrs["name1"]), g["keypoints0"][()],
                               g["keypoints1"][()], g["confidence"][()], tuple(int(v) for v in g.attrs["size0"]),
                               tuple(int(v) for v in g.attrs["size1"]), tuple(float(v) for v in g.attrs["scale0"]),
                               tuple(float(v) for v in g.attrs["scale1"]))
                out[r.key] = r
    return out


@dataclass(frozen=True, eq=False)
class MergedKeypoints:
    """Per-image keypoints (K, 2), scores (K,), sizes (W, H) and scales (sx, sy), and per pair key
    (matches0 (K0,), scores0 (K0,))."""

    keypoints: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    sizes: dict[str, tuple[int, int]]
    scales: dict[str, tuple[float, float]]
    matches: dict[str, tuple[np.ndarray, np.ndarray]]


def _cells(points: np.ndarray, scale: tuple[float, float], quantize: float) -> np.ndarray:
    """Grid cells (M, 2) of original-pixel points: a grid of ``quantize`` network-input pixels."""
    if quantize > 0:
        return np.round(points.astype(np.float64) * np.asarray(scale) / quantize).astype(np.int64)
    return points.astype(np.float64)


def merge_keypoints(results: Iterable[PairResult], quantize: float) -> MergedKeypoints:
    """Per-image keypoints from the raw pairs and the pairs' matches between them (see the module doc)."""
    results = sorted(results, key=lambda r: r.key)
    obs: dict[str, list[tuple[int, int, np.ndarray, np.ndarray]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    scales: dict[str, tuple[float, float]] = {}
    for p, r in enumerate(results):
        sides = ((r.name0, r.keypoints0, r.size0, r.scale0), (r.name1, r.keypoints1, r.size1, r.scale1))
        for side, (name, kpts, size, scale) in enumerate(sides):
            obs.setdefault(name, []).append((p, side, np.asarray(kpts, np.float32).reshape(-1, 2), r.confidence))
            sizes[name], scales[name] = tuple(size), tuple(scale)
    keypoints, scores, ids = {}, {}, {}
    for name, items in obs.items():
        pts = np.concatenate([k for _, _, k, _ in items])
        conf = np.concatenate([np.asarray(c, np.float32).reshape(-1) for _, _, _, c in items])
        if len(pts) == 0:
            keypoints[name], scores[name] = np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
            for p, side, _, _ in items:
                ids[(p, side)] = np.zeros(0, np.int64)
            continue
        _, inverse = np.unique(_cells(pts, scales[name], quantize), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(-conf, kind="stable")
        _, first = np.unique(inverse[order], return_index=True)  # best observation of each cell, cells in order
        best = order[first]
        keypoints[name], scores[name] = pts[best], conf[best]
        start = 0
        for p, side, k, _ in items:
            ids[(p, side)] = inverse[start:start + len(k)]
            start += len(k)
    matches = {}
    for p, r in enumerate(results):
        i0, i1 = ids[(p, 0)], ids[(p, 1)]
        conf = np.asarray(r.confidence, np.float32).reshape(-1)
        order = np.argsort(-conf, kind="stable")
        keep = order[np.unique(i0[order], return_index=True)[1]]  # each keypoint of image0: its best match
        keep = keep[np.argsort(-conf[keep], kind="stable")]
        keep = keep[np.unique(i1[keep], return_index=True)[1]]  # then each keypoint of image1: the best of those
        m0 = np.full(len(keypoints[r.name0]), -1, np.int32)
        s0 = np.zeros(len(keypoints[r.name0]), np.float32)
        m0[i0[keep]], s0[i0[keep]] = i1[keep], conf[keep]
        matches[r.key] = (m0, s0)
    return MergedKeypoints(keypoints, scores, sizes, scales, matches)


def check_names(names: Iterable[str]) -> None:
    """Image names that would collide with the ``/pairs`` group raise :class:`PipelineError`."""
    for name in names:
        if name == "pairs" or name.startswith("pairs/"):
            raise PipelineError(f"image name {name!r} collides with the /pairs group of the match file; rename it")


def write_final(path: str | Path, results: Mapping[str, PairResult], settings: str, quantize: float) -> Path:
    """The complete output file (layout in the module doc), written atomically."""
    merged = merge_keypoints(results.values(), quantize)
    check_names(merged.keypoints)

    def fill(f) -> None:
        for name in sorted(merged.keypoints):
            g = f.create_group(name)
            g.create_dataset("keypoints", data=merged.keypoints[name])
            g.create_dataset("scores", data=merged.scores[name])
            g.create_dataset("image_size", data=np.asarray(merged.sizes[name], np.int32))
        for key in sorted(merged.matches):
            g = f.create_group(key)
            g.create_dataset("matches0", data=merged.matches[key][0])
            g.create_dataset("matching_scores0", data=merged.matches[key][1])
        _write_raw(f, (results[k] for k in sorted(results)))

    attrs = {"format": FORMAT, "settings": settings, "quantize": float(quantize)}
    out = atomic_write(Path(path), fill, attrs)
    log.info("wrote %s: %d images, %d pairs", out, len(merged.keypoints), len(results))
    return out


def merge_files(parts: Iterable[str | Path], out: str | Path, quantize: float, *, force: bool = False) -> Path:
    """Merge raw pairs of part files (and chunk or final files) into one final file. Files made with different
    settings raise unless ``force``; a pair found in several files keeps its last copy."""
    parts = [Path(p) for p in parts]
    if not parts:
        raise PipelineError("give at least one part file to merge")
    results: dict[str, PairResult] = {}
    settings = None
    for part in parts:
        if not part.is_file():
            raise PipelineError(f"part file {part} does not exist")
        s = read_settings(part)
        if settings is not None and s != settings and not force:
            raise PipelineError(f"{part} was made with other settings than {parts[0]}; use --force to merge anyway")
        settings = settings or s
        results.update(read_raw(part))
    return write_final(out, results, settings or json.dumps({}), quantize)


def read_matches(path: str | Path, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hloc-style read of a final file: (keypoints0 (K, 2), keypoints1 (K, 2), scores (K,)) of the index matches
    of a pair, in either order."""
    h5py = _h5py()
    with h5py.File(path, "r") as f:
        key, flip = pair_key(name0, name1), False
        if key not in f:
            key, flip = pair_key(name1, name0), True
            if key not in f:
                raise PipelineError(f"pair ({name0}, {name1}) is not in {path}")
        m0, s0 = f[key]["matches0"][()], f[key]["matching_scores0"][()]
        a, b = (name1, name0) if flip else (name0, name1)
        k0, k1 = f[a]["keypoints"][()], f[b]["keypoints"][()]
    idx = np.flatnonzero(m0 >= 0)
    p0, p1 = k0[idx], k1[m0[idx]]
    return (p1, p0, s0[idx]) if flip else (p0, p1, s0[idx])


__all__ = ["PairResult", "MergedKeypoints", "pair_key", "merge_keypoints", "write_final", "write_raw_file",
           "read_raw", "read_settings", "merge_files", "read_matches", "check_names", "FORMAT",
           "DEFAULT_QUANTIZE"]
