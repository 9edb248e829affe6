"""Training and validation data of a run: the held-out split, fixed validation subsets and the step-indexed
sampler that makes the data a pure function of (seed, step, rank)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
from torch.utils.data import Dataset, Sampler

from .config import TrainConfig
from .data import HomographyPairs, list_images
from .datasets import MEGADEPTH_MIN_OVERLAP, SCANNET_MIN_OVERLAP, MegaDepthPairs, ScanNetPairs
from .mixed import MixedPairs
from .posed import PosedPairs, scene_folders
from .scenes import ScenePairs
from .teacher import TeacherPairs
from .warps import ExtremeWarp


def split_holdout(images: list[Path], every: int) -> tuple[list[Path], list[Path]]:
    """(validation, training) photos: every ``every``-th photo is held out; ``every`` 0 validates on training photos."""
    if every <= 0:
        return images, images
    val = images[::every]
    train = [p for k, p in enumerate(images) if k % every]
    if not val or not train:
        raise ValueError(f"cannot hold out every {every}th of {len(images)} training images")
    return val, train


class PairSubset(Dataset):
    """Some pairs of a dataset (the validation pairs), keeping its collate function."""

    def __init__(self, data: Dataset, indices: list[int]) -> None:
        self.data, self.indices = data, list(indices)
        self.collate = data.collate

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.data[self.indices[index]]


class StepSampler(Sampler[int]):
    """Sample indices of one rank for steps ``start`` to ``stop``: slot b of step s on rank r is global position
    ``g = (s * world + r) * batch + b``, so ranks see distinct samples and a run resumed at step k draws exactly what
    an uninterrupted run would. Finite datasets are walked in a permutation per epoch (seeded by (seed, epoch));
    ``endless`` datasets (random pairs, :class:`HomographyPairs`) take g itself."""

    def __init__(self, n: int, batch_size: int, start: int, stop: int, *, world: int = 1, rank: int = 0,
                 seed: int = 0, endless: bool = False) -> None:
        if n < 1:
            raise ValueError("no training pairs")
        self.n, self.batch_size, self.start, self.stop = n, batch_size, start, stop
        self.world, self.rank, self.seed, self.endless = world, rank, seed, endless
        self._epoch, self._perm = -1, np.arange(0)

    def __len__(self) -> int:
        return max(self.stop - self.start, 0) * self.batch_size

    def position(self, g: int) -> int:
        if self.endless:
            return g
        epoch, k = divmod(g, self.n)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return int(self._perm[k])

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start, self.stop):
            for b in range(self.batch_size):
                yield self.position((step * self.world + self.rank) * self.batch_size + b)


def _extreme(cfg: TrainConfig) -> dict[str, Any]:
    """The extreme-view settings of the training photo pairs."""
    return {"extreme_share": cfg.extreme_share, "extreme": ExtremeWarp(max_rotation=cfg.extreme_rotation),
            "hard_light": cfg.hard_light, "extreme_light": cfg.extreme_light}


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset, bool]:
    """(training pairs, validation pairs, whether the training pairs are endless) of a config."""
    if cfg.dataset == "photos":
        images = list_images(cfg.images)
        val_images, train_images = split_holdout(images, cfg.holdout)
        val = HomographyPairs(val_images, cfg.size, cfg.val_pairs, seed=cfg.seed + 1000)
        data = HomographyPairs(train_images, cfg.size, length=cfg.batch_size * cfg.checkpoint_every, seed=cfg.seed,
                               **_extreme(cfg))
        return data, val, True
    if cfg.dataset in ("scenes", "mixed"):
        images = list_images(cfg.images)
        val_images, train_images = split_holdout(images, cfg.holdout)
        size = (cfg.size // 8 * 8, cfg.size * 3 // 4 // 8 * 8)
        length = cfg.batch_size * cfg.checkpoint_every
        val = ScenePairs(val_images, size, cfg.val_pairs, seed=cfg.seed + 1000)  # mixed: judged on 3D pairs
        data = ScenePairs(train_images, size, length=length, seed=cfg.seed, fine=cfg.scene_fine)
        if cfg.dataset == "mixed":
            photos = HomographyPairs(train_images, size[1], length=length, seed=cfg.seed + 1, **_extreme(cfg))
            rest = max(1.0 - cfg.scene_share - cfg.teacher_share - cfg.posed_share, 0.0)
            sources, shares = [data, photos], [cfg.scene_share, rest]
            if cfg.teacher and cfg.teacher_share > 0:
                root = Path(cfg.images)
                held_out = [p.relative_to(root).as_posix() for p in val_images if p.is_relative_to(root)]
                sources.append(TeacherPairs(cfg.teacher, root, size, length=length, seed=cfg.seed + 2,
                                            exclude=held_out))
                shares.append(cfg.teacher_share)
            if cfg.posed and cfg.posed_share > 0:
                scenes = scene_folders(cfg.posed, cfg.posed_holdout.split(","))
                sources.append(PosedPairs(scenes, size, length=length, seed=cfg.seed + 3, fine=cfg.posed_fine,
                                          max_zoom=cfg.posed_max_zoom, hard_light=cfg.hard_light,
                                          teacher=cfg.posed_teacher or None, teacher_root=cfg.images))
                shares.append(cfg.posed_share)
            data = MixedPairs(sources, shares, cfg.batch_size, seed=cfg.seed, length=length)
        return data, val, True
    if not cfg.index:
        raise ValueError(f"dataset {cfg.dataset} needs an index (--index)")
    if cfg.dataset == "scannet":
        overlap = SCANNET_MIN_OVERLAP if cfg.min_overlap < 0 else cfg.min_overlap
        size = (cfg.size // 8 * 8, cfg.size * 3 // 4 // 8 * 8)

        def make(index: str) -> Dataset:
            return ScanNetPairs(cfg.images, index, cfg.intrinsics or None, size, overlap)
    else:
        overlap = MEGADEPTH_MIN_OVERLAP if cfg.min_overlap < 0 else cfg.min_overlap

        def make(index: str) -> Dataset:
            return MegaDepthPairs(cfg.images, index, cfg.size, overlap)
    data = make(cfg.index)
    if len(data) == 0:
        raise ValueError(f"no training pairs in {cfg.index} with overlap above {overlap}")
    source = make(cfg.val_index) if cfg.val_index else data
    picks = sorted({int(round(x)) for x in np.linspace(0, len(source) - 1, min(cfg.val_pairs, len(source)))})
    return data, PairSubset(source, picks if cfg.val_pairs else []), False
