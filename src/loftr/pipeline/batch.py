"""Batched, resumable, optionally distributed matching of many pairs into one HDF5 file (layout: :mod:`.h5`).

- Batches: pairs whose prepared images have the same padded sizes (image0s alike, image1s alike) are batched
  together, in pair-list order, so a pair's result does not depend on which pairs share its batch. A
  ``torch.utils.data.DataLoader`` decodes and prepares the images in worker processes.
- Resumable and safe: every ``commit_every`` pairs (or ``commit_seconds``) the finished pairs go to a new chunk file
  in ``OUT.partial/`` written as a temporary file and renamed (``os.replace``), so a killed run leaves only whole
  chunks; a rerun reads them (and a previous OUT) and matches only the rest. The final OUT is written the same
  way, then the chunks are removed. A run whose model or options differ from the files' raises.
- Distributed: under ``torch.distributed`` (e.g. launched by torchrun), batches go round-robin to the ranks; each
  rank writes ``OUT.rank{r}.h5`` with its pairs, and rank 0 merges them into OUT after a barrier.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ImageError
from ..io import PreparedImage, prepare, target_size, to_original
from . import PipelineError
from .h5 import DEFAULT_QUANTIZE, PairResult, pair_key, read_raw, read_settings, write_final, write_raw_file
from .pairs import Pair

if TYPE_CHECKING:
    from ..matcher import Matcher

log = logging.getLogger(__name__)


def image_size(path: str | Path) -> tuple[int, int]:
    """(W, H) of an image file after its EXIF orientation, from the header only (no decoding)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise ImageError(f"image file {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"cannot read image {path}: {exc}") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def padded_shape(size: tuple[int, int], resize: tuple[int, int] | None, max_size: int | None,
                 divisor: int) -> tuple[int, int]:
    """(Hp, Wp) of the network input :func:`loftr.io.prepare` makes from an image of (W, H) ``size``."""
    tw, th = target_size(size[0], size[1], resize, max_size)
    return th + (-th % divisor), tw + (-tw % divisor)


def plan_batches(pairs: Sequence[Pair], shapes: dict[str, tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Pair indexes grouped into batches of at most ``batch_size`` whose image0s share a shape and image1s share a
    shape; deterministic in the pair order (a batch is emitted when full, the rest in order of first use)."""
    if batch_size < 1:
        raise PipelineError(f"the batch size must be at least 1, got {batch_size}")
    open_batches: OrderedDict[tuple, list[int]] = OrderedDict()
    batches = []
    for i, (a, b) in enumerate(pairs):
        group = open_batches.setdefault((shapes[a], shapes[b]), [])
        group.append(i)
        if len(group) == batch_size:
            batches.append(group)
            del open_batches[(shapes[a], shapes[b])]
    return batches + list(open_batches.values())


@dataclass(frozen=True)
class LoadedBatch:
    """Prepared images of a batch of pairs: ``images`` (B, 1, Hp, Wp) and ``masks`` (B, Hp, Wp) | None per side,
    ``scales`` (sx, sy) and ``sizes`` (W, H) per pair and side; ``index`` the pair indexes."""

    index: tuple[int, ...]
    images: tuple[torch.Tensor, torch.Tensor]
    masks: tuple[torch.Tensor | None, torch.Tensor | None]
    scales: tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]
    sizes: tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]


class PairBatches(Dataset):
    """Item i = :class:`LoadedBatch` of batch i; keeps a small cache of prepared images (per worker process)."""

    def __init__(self, image_dir: Path, pairs: Sequence[Pair], batches: Sequence[Sequence[int]],
                 resize: tuple[int, int] | None, max_size: int | None, divisor: int, cache: int = 32) -> None:
        self.image_dir, self.pairs, self.batches = Path(image_dir), list(pairs), [list(b) for b in batches]
        self.resize, self.max_size, self.divisor, self.cache_size = resize, max_size, divisor, cache
        self._cache: OrderedDict[str, PreparedImage] = OrderedDict()

    def __len__(self) -> int:
        return len(self.batches)

    def _prepared(self, name: str) -> PreparedImage:
        if name in self._cache:
            self._cache.move_to_end(name)
            return self._cache[name]
        p = prepare(self.image_dir / name, resize=self.resize, max_size=self.max_size, divisor=self.divisor)
        self._cache[name] = p
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return p

    def __getitem__(self, i: int) -> LoadedBatch:
        index = tuple(self.batches[i])
        images, masks, scales, sizes = [], [], [], []
        for side in (0, 1):
            preps = [self._prepared(self.pairs[k][side]) for k in index]
            if len({p.image.shape for p in preps}) != 1:
                raise PipelineError(f"images of one batch differ in size after preparing ({self.pairs[index[0]]}); "
                                    "their headers gave other sizes than their pixels")
            images.append(torch.cat([p.image for p in preps]))
            if any(p.mask is not None for p in preps):
                masks.append(torch.cat([p.mask if p.mask is not None else torch.ones_like(preps[0].image[:, 0],
                                                                                         dtype=torch.bool)
                                        for p in preps]))
            else:
                masks.append(None)
            scales.append(tuple(p.scale for p in preps))
            sizes.append(tuple(p.size for p in preps))
        return LoadedBatch(index, (images[0], images[1]), (masks[0], masks[1]), (scales[0], scales[1]),
                           (sizes[0], sizes[1]))


def _keep(item: LoadedBatch) -> LoadedBatch:
    return item


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def settings_of(matcher: "Matcher") -> str:
    """JSON of what determines the matches: a sha256 of the weights, the config and the matcher's options."""
    h = hashlib.sha256()
    for k, v in sorted(matcher.model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().contiguous().numpy().tobytes() if v.is_floating_point()
                 else v.detach().cpu().contiguous().numpy().tobytes())
    h.update(repr(matcher.model.config).encode())
    settings = {"weights_sha256": h.hexdigest(), "preset": getattr(matcher.model, "preset", None),
                "resize": list(matcher.resize) if matcher.resize else None, "max_size": matcher.max_size,
                "threshold": matcher.threshold, "max_std": matcher.max_std, "max_matches": matcher.max_matches,
                "dtype": str(matcher.dtype)}
    if getattr(matcher, "two_way", False):  # only then, so that files of one-way matching stay resumable
        settings["two_way"] = True
    return json.dumps(settings, sort_keys=True)


@dataclass(frozen=True)
class MatchSummary:
    """What a run did: ``pairs`` asked for, ``skipped`` found done, ``matched`` now (all ranks), seconds."""

    out: Path
    pairs: int
    skipped: int
    matched: int
    seconds: float
    rank: int = 0
    world_size: int = 1


def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def part_path(out: Path, rank: int) -> Path:
    """The part file of ``rank``: OUT.rank{r}.h5 next to OUT."""
    return out.with_name(f"{out.stem}.rank{rank}.h5")


def partial_dir(out: Path) -> Path:
    """The folder of committed chunks of an unfinished run."""
    return out.with_name(out.name + ".partial")


def _check(path: Path, settings: str, overwrite_hint: str) -> None:
    if read_settings(path) != settings:
        raise PipelineError(f"{path} was written with another model or other options; {overwrite_hint}")


def _load_done(out: Path, settings: str) -> tuple[dict[str, PairResult], dict[str, PairResult], int]:
    """(results of an existing OUT, results of committed chunks, number of chunk files)."""
    hint = "pass --overwrite (overwrite=True) to start over or choose another output"
    previous: dict[str, PairResult] = {}
    if out.exists():
        _check(out, settings, hint)
        previous = read_raw(out)
    chunks: dict[str, PairResult] = {}
    files = sorted(partial_dir(out).glob("*.h5")) if partial_dir(out).is_dir() else []
    for f in files:
        _check(f, settings, hint)
        chunks.update(read_raw(f))
    return previous, chunks, len(files)


def _results_of(batch: LoadedBatch, matches, pairs: Sequence[Pair], max_matches: int | None) -> list[PairResult]:
    """Per-pair :class:`PairResult` (original pixels, most confident first) of a batch's matches."""
    out = []
    for b, k in enumerate(batch.index):
        m = matches.of_pair(b)
        k0, k1 = m.keypoints0.float(), m.keypoints1.float()
        s0, s1 = batch.scales[0][b], batch.scales[1][b]
        k0 = to_original(k0, s0) if s0 != (1.0, 1.0) else k0
        k1 = to_original(k1, s1) if s1 != (1.0, 1.0) else k1
        conf = m.confidence.float().cpu()
        order = torch.argsort(conf, descending=True, stable=True)
        if max_matches is not None:
            order = order[:max_matches]
        out.append(PairResult(pairs[k][0], pairs[k][1], k0.cpu()[order].numpy(), k1.cpu()[order].numpy(),
                              conf[order].numpy(), batch.sizes[0][b], batch.sizes[1][b], s0, s1))
    return out


def match_pairs(matcher: "Matcher", image_dir: str | Path, pairs: Sequence[Pair], out: str | Path, *,
                batch_size: int = 4, workers: int = 0, quantize: float = DEFAULT_QUANTIZE, commit_every: int = 64,
                commit_seconds: float = 60.0, overwrite: bool = False, progress: bool = False) -> MatchSummary:
    """Match ``pairs`` of images of ``image_dir`` into the HDF5 file ``out`` (see the module doc).

    ``quantize``: grid (network-input pixels) of the per-image keypoint merge. Under torch.distributed each rank calls
    this with the same arguments.
    """
    t_start = time.perf_counter()
    image_dir, out = Path(image_dir), Path(out)
    rank, world = _distributed()
    if not pairs:
        raise PipelineError("there are no pairs to match")
    names = sorted({n for p in pairs for n in p})
    for n in names:
        if not (image_dir / n).is_file():
            raise PipelineError(f"image {n!r} of the pairs is not in {image_dir}")
    settings = settings_of(matcher)
    if overwrite and rank == 0:
        for stale in [out, *out.parent.glob(f"{out.stem}.rank*.h5")]:
            stale.unlink(missing_ok=True)
        shutil.rmtree(partial_dir(out), ignore_errors=True)
    _barrier(world)
    previous, chunks, n_chunks = _load_done(out, settings)
    done = set(previous) | set(chunks)
    shapes = {n: padded_shape(image_size(image_dir / n), matcher.resize, matcher.max_size, matcher.stride)
              for n in names}
    batches = plan_batches(pairs, shapes, batch_size)
    mine = batches[rank::world]
    todo = [[k for k in b if pair_key(*pairs[k]) not in done] for b in mine]
    todo = [b for b in todo if b]
    n_mine, n_todo = sum(len(b) for b in mine), sum(len(b) for b in todo)
    log.info("rank %d/%d: %d pairs, %d already done, %d to match", rank, world, n_mine, n_mine - n_todo, n_todo)

    chunk_dir = partial_dir(out)
    new = _match_batches(matcher, image_dir, pairs, todo, chunk_dir, settings, rank=rank, workers=workers,
                         commit_every=commit_every, commit_seconds=commit_seconds,
                         progress=progress and rank == 0, batch_size=batch_size)
    all_new = {**chunks, **new}
    if world > 1:
        my_keys = {pair_key(*pairs[k]) for b in mine for k in b}
        write_raw_file(part_path(out, rank), [r for key, r in sorted(all_new.items()) if key in my_keys], settings)
        _barrier(world)
        if rank == 0:
            merged = dict(previous)
            for r in range(world):
                merged.update(read_raw(part_path(out, r)))
            merged.update(all_new)  # chunks of pairs outside the current list (an earlier, other list) too
            write_final(out, merged, settings, quantize)
            for r in range(world):
                part_path(out, r).unlink(missing_ok=True)
            shutil.rmtree(chunk_dir, ignore_errors=True)
        _barrier(world)
        import torch.distributed as dist

        counts = torch.tensor([len(new), n_mine - n_todo], dtype=torch.long)
        dist.all_reduce(counts)  # totals over the ranks for the summary
        n_new, n_skipped = int(counts[0]), int(counts[1])
    else:
        if all_new or n_chunks or not out.exists() or _quantize_of(out) != float(quantize):
            write_final(out, {**previous, **all_new}, settings, quantize)
        shutil.rmtree(chunk_dir, ignore_errors=True)
        n_new, n_skipped = len(new), len(pairs) - n_todo
    return MatchSummary(out, len(pairs), n_skipped, n_new, time.perf_counter() - t_start, rank, world)


def _match_batches(matcher: "Matcher", image_dir: Path, pairs: Sequence[Pair], todo: list[list[int]],
                   chunk_dir: Path, settings: str, *, rank: int, workers: int, commit_every: int,
                   commit_seconds: float, progress: bool, batch_size: int) -> dict[str, PairResult]:
    """Match the ``todo`` batches, committing finished pairs to chunk files; returns the new results by key."""
    from tqdm import tqdm

    chunk_dir.mkdir(parents=True, exist_ok=True)
    for stale in chunk_dir.glob(f"chunk-r{rank}-*.tmp"):  # a temporary file of a killed run of this rank
        stale.unlink(missing_ok=True)
    new: dict[str, PairResult] = {}
    pending: list[PairResult] = []
    last_commit = time.perf_counter()

    def commit() -> None:
        nonlocal pending, last_commit
        if pending:
            write_raw_file(chunk_dir / f"chunk-r{rank}-{os.getpid()}-{time.time_ns()}.h5", pending, settings)
            pending, last_commit = [], time.perf_counter()

    dataset = PairBatches(image_dir, pairs, todo, matcher.resize, matcher.max_size, matcher.stride,
                          cache=max(32, 4 * batch_size))
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=max(int(workers), 0),
                        collate_fn=_keep, worker_init_fn=_worker_init if workers > 0 else None)
    total = sum(len(b) for b in todo)
    with tqdm(total=total, unit="pair", desc="match-pairs", disable=not progress, dynamic_ncols=True) as bar, \
            torch.inference_mode():
        for batch in loader:
            # batched PreparedImages: match_prepared reads only their images and masks
            p0 = PreparedImage(batch.images[0], batch.masks[0], (1.0, 1.0), (0, 0), (0, 0))
            p1 = PreparedImage(batch.images[1], batch.masks[1], (1.0, 1.0), (0, 0), (0, 0))
            results = _results_of(batch, matcher.match_prepared(p0, p1), pairs, matcher.max_matches)
            for r in results:
                new[r.key] = r
            pending.extend(results)
            if len(pending) >= commit_every or time.perf_counter() - last_commit >= commit_seconds:
                commit()
            bar.update(len(batch.index))
        commit()
    return new


def _quantize_of(path: Path) -> float | None:
    import h5py

    with h5py.File(path, "r") as f:
        q = f.attrs.get("quantize")
        return None if q is None else float(q)


__all__ = ["match_pairs", "MatchSummary", "plan_batches", "PairBatches", "LoadedBatch", "image_size",
           "padded_shape", "settings_of", "part_path", "partial_dir"]
