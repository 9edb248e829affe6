"""Pair lists: hloc pairs files, exhaustive and sequential pairs over a folder, retrieval by a global descriptor.

An image is named by its path relative to the image folder, with '/' separators (hloc's convention). A pairs file
has one ``name0 name1`` per line; blank lines and lines starting with '#' are ignored. A pair and its reverse are
the same pair: lists keep the first of them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from . import PipelineError

if TYPE_CHECKING:
    from ..matcher import Matcher

log = logging.getLogger(__name__)

Pair = tuple[str, str]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def list_images(image_dir: str | Path) -> list[str]:
    """Names (relative posix paths, sorted) of the image files under ``image_dir``, searched recursively. Names
    with whitespace, which pairs files cannot hold, are left out with a warning."""
    root = Path(image_dir)
    if not root.is_dir():
        raise PipelineError(f"image folder {root} does not exist or is not a folder")
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    spaced = [n for n in names if any(ch.isspace() for ch in n)]
    if spaced:
        log.warning("%d images left out: names with whitespace (e.g. %r) cannot go in a pairs file; rename them",
                    len(spaced), spaced[0])
    return [n for n in names if n not in spaced]


def unique_pairs(pairs: Iterable[Pair]) -> list[Pair]:
    """The pairs without duplicates: (a, b) after an earlier (a, b) or (b, a) is dropped; order kept."""
    seen: set[frozenset[str]] = set()
    out = []
    for a, b in pairs:
        key = frozenset((a, b))
        if key not in seen:
            seen.add(key)
            out.append((a, b))
    return out


def read_pairs(path: str | Path, names: Sequence[str] | None = None) -> list[Pair]:
    """Parse an hloc pairs file. With ``names`` (the images that exist), unknown names raise naming the line."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"pairs file {path} does not exist")
    known = set(names) if names is not None else None
    pairs = []
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise PipelineError(f"{path}:{lineno}: expected 'name0 name1', got {line!r}")
        if parts[0] == parts[1]:
            raise PipelineError(f"{path}:{lineno}: an image paired with itself ({parts[0]})")
        if known is not None:
            for name in parts:
                if name not in known:
                    raise PipelineError(f"{path}:{lineno}: image {name!r} is not in the image folder")
        pairs.append((parts[0], parts[1]))
    out = unique_pairs(pairs)
    if len(out) < len(pairs):
        log.warning("%s: %d duplicate pairs ignored", path, len(pairs) - len(out))
    return out


def write_pairs(path: str | Path, pairs: Iterable[Pair]) -> Path:
    """Write an hloc pairs file, one ``name0 name1`` per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{a} {b}\n" for a, b in pairs))
    return path


def exhaustive_pairs(names: Sequence[str]) -> list[Pair]:
    """Every pair (names[i], names[j]) with i < j of the sorted names."""
    s = sorted(names)
    return [(s[i], s[j]) for i in range(len(s)) for j in range(i + 1, len(s))]


def sequential_pairs(names: Sequence[str], overlap: int) -> list[Pair]:
    """Each image of the sorted names with its next ``overlap`` images (a video or a walk-around sequence)."""
    if overlap < 1:
        raise PipelineError(f"the sequential overlap must be at least 1, got {overlap}")
    s = sorted(names)
    return [(s[i], s[j]) for i in range(len(s)) for j in range(i + 1, min(i + 1 + overlap, len(s)))]


AUTO_EXHAUSTIVE_MAX = 30
"""Largest image set whose default pairs (:func:`auto_pairs`) are all pairs: 30 images are 435 pairs."""
AUTO_SEQUENTIAL = 5
AUTO_RETRIEVAL = 10


def auto_pairs(names: Sequence[str], descriptors: Callable[[], np.ndarray] | None = None, *,
               max_exhaustive: int = AUTO_EXHAUSTIVE_MAX, sequential: int = AUTO_SEQUENTIAL,
               retrieval: int = AUTO_RETRIEVAL) -> list[Pair]:
    """The default pairs of a folder: every pair for at most ``max_exhaustive`` images (COLMAP's advice for small
    sets: no view is left without its true neighbours); for more, each image with its next ``sequential`` by name
    plus its ``retrieval`` nearest by global descriptor, which closes the jumps of a sequence (frames skipped, a
    second pass). ``descriptors``: a callable giving the (N, D) descriptors of the sorted names, called only when
    needed; without it a large set gets the sequential pairs alone."""
    s = sorted(names)
    if len(s) <= max_exhaustive:
        return exhaustive_pairs(s)
    pairs = sequential_pairs(s, sequential)
    if descriptors is not None and retrieval > 0:
        pairs = pairs + retrieval_pairs(s, descriptors(), retrieval)
    return unique_pairs(pairs)


def retrieval_pairs(names: Sequence[str], descriptors: np.ndarray, k: int) -> list[Pair]:
    """Each image with its ``k`` nearest others by cosine similarity of its global descriptor (N, D).

    Pairs are oriented in name order and deduplicated (a pair retrieved from both sides appears once).
    """
    if len(names) != len(descriptors):
        raise PipelineError(f"{len(names)} names but {len(descriptors)} descriptors")
    if k < 1:
        raise PipelineError(f"retrieval needs k >= 1, got {k}")
    d = np.asarray(descriptors, dtype=np.float64)
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    sim = d @ d.T
    np.fill_diagonal(sim, -np.inf)
    k = min(k, len(names) - 1)
    pairs = []
    for i in range(len(names)):
        order = np.argsort(-sim[i], kind="stable")[:k]
        pairs.extend(tuple(sorted((names[i], names[j]))) for j in order)
    return sorted(unique_pairs(pairs))


def global_descriptors(matcher: "Matcher", paths: Sequence[str | Path]) -> np.ndarray:
    """(N, C) global descriptors: the mean of the L2-normalised coarse backbone features over the image, normalised.

    A simple, training-free descriptor from our own network (no retrieval training): it finds views of the same
    scene at similar scale and appearance (video frames, a walk around an object), not hard wide-baseline
    neighbours. Images are prepared as the matcher prepares them.
    """
    import torch

    out = []
    with torch.inference_mode():
        for path in paths:
            prep = matcher.prepare(path)
            coarse, _ = matcher.model.backbone(prep.image.to(matcher.device))  # (1, C, Hc, Wc)
            feat = torch.nn.functional.normalize(coarse[0].flatten(1).float(), dim=0)  # (C, Hc*Wc)
            if prep.mask is not None:
                stride = matcher.stride
                valid = prep.mask[0, ::stride, ::stride].flatten().to(feat.device)
                feat = feat[:, valid]
            out.append(torch.nn.functional.normalize(feat.mean(1), dim=0).cpu().numpy())
    return np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)


__all__ = ["Pair", "list_images", "read_pairs", "write_pairs", "exhaustive_pairs", "sequential_pairs",
           "retrieval_pairs", "auto_pairs", "global_descriptors", "unique_pairs", "IMAGE_SUFFIXES",
           "AUTO_EXHAUSTIVE_MAX", "AUTO_SEQUENTIAL", "AUTO_RETRIEVAL"]
