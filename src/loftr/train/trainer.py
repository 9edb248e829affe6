"""Training loop: the official losses on homographic photo pairs, ScanNet or MegaDepth; exact resume; DDP.

* AdamW, linear warm-up then cosine decay, gradient clipping; bfloat16 autocast of the backbone (CPU or GPU) or
  float16 with a gradient scaler (CUDA).
* ``out_dir/last.pt`` every ``checkpoint_every`` steps: model, optimizer, scheduler, step, preset, plus the config,
  every rank's RNG states (torch, CUDA, numpy, python), the gradient scaler and the training time. Data are a pure
  function of (seed, step, rank) (:class:`StepSampler`), so a resumed run continues exactly as an uninterrupted one
  would. Checkpoints without the newer keys still load.
* ``out_dir/log.jsonl``: losses every ``log_every`` steps, validation metrics (matches per pair, precision at 1/3
  px against the true mapping) every ``validate_every`` steps, each with a snapshot ``stepNNNNNN.pt``.
* Multi-process data parallel under ``torchrun`` (``torch.distributed``: gloo on CPU, nccl on GPU): each rank takes a
  distinct shard of the samples, gradients are averaged, only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import LoFTRConfig, get_preset
from ..model import LoFTR
from .data import HomographyPairs, PairSample, collate, list_images
from .datasets import MEGADEPTH_MIN_OVERLAP, SCANNET_MIN_OVERLAP, DepthPairSample, MegaDepthPairs, ScanNetPairs
from .losses import coarse_focal_loss, coarse_focal_loss_with_bins, fine_l2_std_loss
from .runlog import read_log, training_seconds
from .supervision import (CoarseSupervision, coarse_cells, coarse_supervision, depth_coarse_supervision, fine_targets,
                          warp, warp_depth)

log = logging.getLogger(__name__)

DATASETS = ("photos", "scannet", "megadepth")
# preset fields a run may change without making its weights need another config than the preset's
TRAINING_ONLY_OVERRIDES = {"match_coarse": ("train_coarse_percent", "train_pad_num_gt_min")}


def _f(default: Any, help: str) -> Any:
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on (``config.json`` of a run, the ``--config`` file of ``loftr train``)."""

    images: str = field(metadata={"help": "photo folder (dataset photos) or the ScanNet/MegaDepth data root"})
    out_dir: str = field(metadata={"help": "run folder: last.pt, config.json, log.jsonl, stepNNNNNN.pt"})
    preset: str = _f("tiny_ds", "model preset (see loftr.config.PRESETS)")
    size: int = _f(256, "photos: crop side; scannet: width (height 3/4 of it); megadepth: longest side, padded square")
    batch_size: int = _f(4, "pairs per step and rank")
    steps: int = _f(20000, "total optimizer steps (the cosine schedule ends there)")
    lr: float = _f(1e-3, "peak learning rate of AdamW")
    weight_decay: float = _f(0.1, "AdamW weight decay")
    warmup: int = _f(300, "linear warm-up steps (from 0.1 lr)")
    grad_clip: float = _f(0.5, "gradient norm clipping")
    checkpoint_every: int = _f(100, "steps between checkpoints (last.pt)")
    validate_every: int = _f(500, "steps between validations (and stepNNNNNN.pt snapshots)")
    val_pairs: int = _f(32, "validation pairs")
    seed: int = _f(0, "seed of the initialisation, data and validation pairs")
    threads: int = _f(0, "torch CPU threads (0: torch's default)")
    init: str = _f("", "weights to start from (checkpoint, safetensors or registry name); ignored on resume")
    holdout: int = _f(8, "photos: every holdout-th photo gives the validation pairs and is not trained on (0: none)")
    bf16: bool = _f(False, "bfloat16 autocast of the backbone (CPU with AVX512-BF16/AMX, or GPU)")
    fp16: bool = _f(False, "float16 autocast of the backbone with a gradient scaler (CUDA only)")
    dataset: str = _f("photos", "photos (homographic self-supervision), scannet or megadepth")
    index: str = _f("", "scannet/megadepth: training index (.npz, folder of .npz, or .txt list of names)")
    intrinsics: str = _f("", "scannet: intrinsics.npz (default: found next to or above the index)")
    val_index: str = _f("", "scannet/megadepth: validation index (default: pairs spread over the training index)")
    min_overlap: float = _f(-1.0, "scannet/megadepth: keep pairs with overlap score above this (-1: 0.4 / 0.0)")
    sparse: bool = _f(False, "sparse coarse supervision (the reference's SPARSE_SPVS) instead of dense")
    depth_check: bool = _f(True, "scannet/megadepth: reject ground truth whose depths disagree (occlusions)")
    model_overrides: dict = _f({}, 'JSON overrides of preset fields, e.g. {"match_coarse": {"train_pad_num_gt_min": 8}}')
    device: str = _f("auto", "auto (cuda if available), cpu, cuda or cuda:N; under torchrun cuda:LOCAL_RANK")
    workers: int = _f(0, "data-loading worker processes per rank")
    log_every: int = _f(10, "steps between loss records in log.jsonl")
    sync_bn: bool = _f(True, "multi-GPU: synchronise BatchNorm statistics across ranks (CUDA only)")

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16 exclude each other")
        for name in ("batch_size", "checkpoint_every", "validate_every", "log_every", "size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.steps < 0 or self.val_pairs < 0 or self.workers < 0:
            raise ValueError("steps, val_pairs and workers cannot be negative")
        if not isinstance(self.model_overrides, dict):
            raise ValueError(f"model_overrides must be a JSON object, got {self.model_overrides!r}")


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from JSON-like values, refusing unknown keys and values of the wrong type."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown training config keys {', '.join(unknown)}; known: {', '.join(fields)}")
    missing = [k for k in ("images", "out_dir") if not values.get(k)]
    if missing:
        raise ValueError(f"the training config needs {' and '.join(missing)} (--data / --out)")
    out = {}
    for name, value in values.items():
        f = fields[name]
        kind = f.type if isinstance(f.type, type) else {"str": str, "int": int, "float": float, "bool": bool,
                                                        "dict": dict}[str(f.type)]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"training config key {name!r} must be {kind.__name__}, got {value!r}")
        out[name] = value
    return TrainConfig(**out)


def apply_overrides(config: Any, overrides: dict[str, Any], where: str = "model_overrides") -> Any:
    """A copy of a (nested) frozen config dataclass with fields replaced; lists become tuples."""
    names = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            raise ValueError(f"{where}: {type(config).__name__} has no field {key!r} (fields: {', '.join(sorted(names))})")
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{where}.{key} must be an object of {type(current).__name__} fields")
            changes[key] = apply_overrides(current, value, f"{where}.{key}")
        elif isinstance(current, tuple):
            changes[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        else:
            changes[key] = value
    return dataclasses.replace(config, **changes)


def architecture_overrides(overrides: dict[str, Any]) -> list[str]:
    """Dotted names of the overridden fields that the preset alone cannot reproduce (all but the training-only ones)."""
    names = []
    for key, value in overrides.items():
        allowed = TRAINING_ONLY_OVERRIDES.get(key, ())
        if isinstance(value, dict):
            names += [f"{key}.{k}" for k in value if k not in allowed]
        else:
            names.append(key)
    return names


def build_model(cfg: TrainConfig) -> LoFTR:
    """The model of a run: its preset with ``model_overrides`` (keeping the preset name when they are training-only)."""
    config: LoFTRConfig = apply_overrides(get_preset(cfg.preset), cfg.model_overrides)
    model = LoFTR(cfg.preset) if not cfg.model_overrides else LoFTR(config=config)
    if not architecture_overrides(cfg.model_overrides):
        model.preset = cfg.preset
    return model


def _schedule(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return 0.1 + 0.9 * step / cfg.warmup
    progress = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


# -- losses ---------------------------------------------------------------------------------------------------------
Batch = PairSample | DepthPairSample


def supervise(batch: Batch, hw0: tuple[int, int], hw1: tuple[int, int], stride: int,
              depth_check: bool = True) -> CoarseSupervision:
    """Coarse ground truth of a batch: from its homography, or from its depth, intrinsics and poses."""
    if isinstance(batch, DepthPairSample):
        return depth_coarse_supervision(batch.depth0, batch.depth1, batch.K0, batch.K1, batch.T_0to1, hw0, hw1,
                                        stride, batch.scale0, batch.scale1, batch.mask0, batch.mask1,
                                        depth_check=depth_check)
    return coarse_supervision(batch.H_0to1, hw0, hw1, stride, batch.valid1)


def loss_terms(model: LoFTR, batch: Batch, *, sparse: bool = False,
               depth_check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of a batch and a (5,) tensor of what to log: loss, coarse loss, fine loss, ground-truth matches, predicted
    matches (those above the threshold; the rest of the fine stage's selections are ground-truth pads)."""
    cfg = model.config
    stride_c, stride_f = cfg.resolution
    mask0, mask1 = getattr(batch, "mask0", None), getattr(batch, "mask1", None)
    hw0 = (batch.image0.shape[2] // stride_c, batch.image0.shape[3] // stride_c)
    hw1 = (batch.image1.shape[2] // stride_c, batch.image1.shape[3] // stride_c)
    sup = supervise(batch, hw0, hw1, stride_c, depth_check)
    pads = sup
    if sup.b_ids.numel() == 0:  # no ground truth: one stand-in keeps the fine stage (and DDP's gradients) running
        zero = torch.zeros(1, dtype=torch.long, device=sup.b_ids.device)
        pads = dataclasses.replace(sup, b_ids=zero, i_ids=zero, j_ids=zero)
    out = model.run(batch.image0, batch.image1, mask0, mask1, supervision=pads)
    if (out.hw0_c, out.hw1_c) != (hw0, hw1):
        raise ValueError(f"training images must have sides that are multiples of {stride_c} pixels, got "
                         f"{tuple(batch.image0.shape[2:])} and {tuple(batch.image1.shape[2:])}")
    weight = None
    if mask0 is not None or mask1 is not None:
        n = batch.image0.shape[0]
        m0 = coarse_cells(mask0, hw0, stride_c) if mask0 is not None else torch.ones(n, hw0[0] * hw0[1], dtype=torch.bool)
        m1 = coarse_cells(mask1, hw1, stride_c) if mask1 is not None else torch.ones(n, hw1[0] * hw1[1], dtype=torch.bool)
        weight = (m0.to(sup.conf_gt.device)[:, :, None] & m1.to(sup.conf_gt.device)[:, None, :]).float()
    if sparse and cfg.match_coarse.match_type == "sinkhorn":
        loss_c = coarse_focal_loss_with_bins(out.conf_matrix_with_bin, sup.conf_gt, weight=weight)
    else:
        loss_c = coarse_focal_loss(out.conf_matrix, sup.conf_gt, weight=weight, sparse=sparse)
    sel = out.coarse
    target = fine_targets(sup, sel.b_ids, sel.i_ids, sel.j_ids, stride_f, cfg.fine_window_size)
    loss_f = fine_l2_std_loss(out.expec_f, target.to(out.expec_f.device))
    loss = loss_c + loss_f
    logs = torch.stack([loss.detach().float(), loss_c.detach().float(), loss_f.detach().float(),
                        torch.tensor(float(sup.b_ids.numel()), device=loss.device),
                        (sel.mconf > 0).sum().float()])
    return loss, logs


def _log_dict(logs: torch.Tensor) -> dict[str, float]:
    loss, loss_c, loss_f, gt, pred = logs.tolist()
    return {"loss": loss, "loss_c": loss_c, "loss_f": loss_f, "gt": int(round(gt)), "pred": int(round(pred))}


def batch_loss(model: LoFTR, batch: Batch, *, sparse: bool = False,
               depth_check: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """Coarse focal + fine L2-std loss of a batch (homographic or with depth), and scalar logs."""
    loss, logs = loss_terms(model, batch, sparse=sparse, depth_check=depth_check)
    return loss, _log_dict(logs)


def training_loss(model: LoFTR, image0: torch.Tensor, image1: torch.Tensor, H: torch.Tensor,
                  valid1: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Coarse focal + fine L2-std loss of a batch of homographic pairs, and scalar logs."""
    return batch_loss(model, PairSample(image0, image1, H, valid1))


class _LossModule(nn.Module):
    """The model with its loss as ``forward``: what DistributedDataParallel wraps (it hooks ``forward`` only)."""

    def __init__(self, model: LoFTR, sparse: bool, depth_check: bool) -> None:
        super().__init__()
        self.model, self.sparse, self.depth_check = model, sparse, depth_check

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return loss_terms(self.model, batch, sparse=self.sparse, depth_check=self.depth_check)


def to_device(batch: Any, device: torch.device) -> Any:
    """A batch dataclass with every tensor on ``device``."""
    moved = {f.name: getattr(batch, f.name).to(device, non_blocking=True) for f in dataclasses.fields(batch)
             if isinstance(getattr(batch, f.name), torch.Tensor)}
    return dataclasses.replace(batch, **moved)


# -- validation -----------------------------------------------------------------------------------------------------
def true_positions(batch: Batch, keypoints0: torch.Tensor,
                   batch_indexes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where matched points of image0 truly are in image1 (network pixels, float64), and which have ground truth."""
    if isinstance(batch, DepthPairSample):
        out = torch.zeros(keypoints0.shape, dtype=torch.float64, device=keypoints0.device)
        ok = torch.zeros(keypoints0.shape[0], dtype=torch.bool, device=keypoints0.device)
        for b in batch_indexes.unique().tolist():
            sel = batch_indexes == b
            pts = keypoints0[sel].double() * batch.scale0[b].double()
            s = slice(b, b + 1)
            valid, warped = warp_depth(pts[None], batch.depth0[s], batch.depth1[s], batch.T_0to1[s], batch.K0[s],
                                       batch.K1[s])
            out[sel] = warped[0] / batch.scale1[b].double()
            ok[sel] = valid[0]
        return out, ok
    proj = warp(keypoints0[:, None].double(), batch.H_0to1[batch_indexes].double())[:, 0]
    return proj, torch.ones(keypoints0.shape[0], dtype=torch.bool, device=keypoints0.device)


@torch.no_grad()
def validate(model: LoFTR, pairs: Dataset, batch_size: int, device: torch.device | None = None) -> dict[str, float]:
    """Matches per pair and precision at 1/3 px against the true mapping (homography, or depth and pose: then over
    the matches with ground truth, whose share is ``with_ground_truth``) on fixed pairs."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    collate_fn = getattr(pairs, "collate", collate)
    total = with_gt = good1 = good3 = 0
    depth = False
    for start in range(0, len(pairs), batch_size):
        batch = to_device(collate_fn([pairs[k] for k in range(start, min(start + batch_size, len(pairs)))]), device)
        depth = isinstance(batch, DepthPairSample)
        m = model.match(batch.image0, batch.image1, getattr(batch, "mask0", None), getattr(batch, "mask1", None))
        if len(m):
            gt, ok = true_positions(batch, m.keypoints0, m.batch_indexes)
            err = (gt - m.keypoints1.double()).norm(dim=-1)
            good1 += int(((err < 1) & ok).sum())
            good3 += int(((err < 3) & ok).sum())
            with_gt += int(ok.sum())
        total += len(m)
    model.train(was_training)
    n = max(len(pairs), 1)
    metrics = {"matches_per_pair": total / n, "precision@1px": good1 / max(with_gt, 1),
               "precision@3px": good3 / max(with_gt, 1)}
    if depth:
        metrics["with_ground_truth"] = with_gt / max(total, 1)
    return metrics


# -- data -----------------------------------------------------------------------------------------------------------
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


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset, bool]:
    """(training pairs, validation pairs, whether the training pairs are endless) of a config."""
    if cfg.dataset == "photos":
        images = list_images(cfg.images)
        val_images, train_images = split_holdout(images, cfg.holdout)
        val = HomographyPairs(val_images, cfg.size, cfg.val_pairs, seed=cfg.seed + 1000)
        data = HomographyPairs(train_images, cfg.size, length=cfg.batch_size * cfg.checkpoint_every, seed=cfg.seed)
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


# -- checkpoints, RNG, processes ------------------------------------------------------------------------------------
def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy (global) and python RNG states, in types ``torch.load(weights_only=True)`` reads."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda,
            "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": {"version": int(version), "internal": list(internal), "gauss": gauss}}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


@dataclass(frozen=True)
class Processes:
    """This process's place in a (possibly single-process) run."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool  # the process group was started here (and is ended here)

    @property
    def main(self) -> bool:
        return self.rank == 0


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name} asked for, but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def setup_processes(device: str) -> Processes:
    """Join the ``torch.distributed`` run described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR/PORT) — nccl on CUDA, gloo otherwise — or use an already started process group; else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device(device, local)
    owns = False
    if dist.is_available() and world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        owns = True
    if dist.is_available() and dist.is_initialized():
        return Processes(dist.get_rank(), dist.get_world_size(), dev, owns)
    return Processes(0, 1, dev, False)


def _grad_scaler() -> Any:
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()  # torch < 2.3


# -- the trainer ----------------------------------------------------------------------------------------------------
class Trainer:
    """One run: builds (or resumes) everything in ``__init__``; :meth:`run` trains up to a step."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.proc = setup_processes(cfg.device)
        device = self.proc.device
        if cfg.fp16 and device.type != "cuda":
            raise ValueError("fp16 training needs CUDA (its gradient scaler); use bf16 on a CPU")
        self.out = Path(cfg.out_dir)
        if self.proc.main:
            self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg)
        if self.proc.world > 1 and device.type == "cuda" and cfg.sync_bn:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(device).train()
        if cfg.bf16 or cfg.fp16:
            self.model.backbone_autocast = torch.bfloat16 if cfg.bf16 else torch.float16
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: _schedule(s, cfg))
        self.scaler = _grad_scaler() if cfg.fp16 else None
        self.step, self.elapsed = 0, 0.0
        restored = False
        if self.last.exists():
            restored = self._load(self.last)
        elif cfg.init:
            from ..weights import load_weights

            load_weights(self.model, cfg.init)
            self.model.train()
            log.info("initialised from %s", cfg.init)
        if not restored and self.proc.rank:
            torch.manual_seed(cfg.seed + self.proc.rank)  # distinct random ground-truth pads per rank
        self.train_data, self.val_data, self.endless = build_datasets(cfg)
        self.loss_module: nn.Module = _LossModule(self.model, cfg.sparse, cfg.depth_check)
        if self.proc.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.loss_module = DistributedDataParallel(
                self.loss_module, device_ids=[device.index] if device.type == "cuda" else None)

    @property
    def last(self) -> Path:
        return self.out / "last.pt"

    def _load(self, path: Path) -> bool:
        """Resume from a checkpoint; True when this rank's RNG state was in it."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("preset") and state["preset"] != self.cfg.preset:
            raise ValueError(f"{path} was trained with preset {state['preset']!r}, not {self.cfg.preset!r}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if "elapsed" in state:
            self.elapsed = float(state["elapsed"])
        elif (self.out / "log.jsonl").exists():
            self.elapsed = training_seconds(read_log(self.out / "log.jsonl")[0], self.step)
        rngs = state.get("rng") or []
        restored = int(state.get("world_size", 1)) == self.proc.world and len(rngs) > self.proc.rank
        if restored:
            set_rng_state(rngs[self.proc.rank])
        elif rngs:
            log.warning("%s was written by %s processes, this run has %d: RNG states not restored", path,
                        state.get("world_size", 1), self.proc.world)
        log.info("resumed from %s at step %d", path, self.step)
        return restored

    def save(self) -> None:
        """Write ``last.pt`` (rank 0), with the RNG states of every rank (a collective call: all ranks call it)."""
        states = [rng_state()]
        if self.proc.world > 1:
            states = [None] * self.proc.world
            dist.all_gather_object(states, rng_state())
        if not self.proc.main:
            return
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "step": self.step, "preset": self.cfg.preset,
                 "config": asdict(self.cfg), "rng": states, "world_size": self.proc.world, "elapsed": self.elapsed}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        _save_atomic(state, self.last)

    def _train_step(self, batch: Batch) -> torch.Tensor:
        cfg = self.cfg
        loss, logs = self.loss_module(batch)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
        self.scheduler.step()
        return logs

    def _reduce(self, logs: torch.Tensor) -> dict[str, float]:
        """Logs of all ranks: mean losses, summed match counts."""
        if self.proc.world > 1:
            dist.all_reduce(logs)
            logs = logs / torch.tensor([self.proc.world] * 3 + [1, 1], device=logs.device, dtype=logs.dtype)
        return _log_dict(logs.cpu())

    def _validate(self, logf: Any) -> None:
        metrics = validate(self.model, self.val_data, self.cfg.batch_size, self.proc.device)
        metrics["step"] = self.step
        logf.write(json.dumps({"val": metrics}) + "\n")
        logf.flush()
        log.info("step %d validation: %s", self.step, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        _save_atomic({"model": self.model.state_dict(), "step": self.step, "preset": self.cfg.preset,
                      "config": asdict(self.cfg), "val": metrics}, self.out / f"step{self.step:06d}.pt")

    def run(self, until: int | None = None) -> Path:
        """Train to ``cfg.steps`` (or stop, with a checkpoint, at step ``until``); returns the path of last.pt."""
        cfg, proc = self.cfg, self.proc
        stop = cfg.steps if until is None else min(int(until), cfg.steps)
        if proc.main:
            (self.out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
        logf = open(self.out / "log.jsonl", "a") if proc.main else None
        try:
            if self.step < stop:
                self._loop(stop, logf)
        finally:
            if logf is not None:
                logf.close()
        if proc.owns_group:  # (after an error the process just ends: a barrier could wait for a dead rank)
            dist.barrier()
            dist.destroy_process_group()
        return self.last

    def _loop(self, stop: int, logf: Any) -> None:
        cfg, proc = self.cfg, self.proc
        sampler = StepSampler(len(self.train_data), cfg.batch_size, self.step, stop, world=proc.world,
                              rank=proc.rank, seed=cfg.seed, endless=self.endless)
        # own generator: creating the loader must not draw from the global RNG (resume exactness)
        loader = DataLoader(self.train_data, batch_size=cfg.batch_size, sampler=sampler,
                            collate_fn=self.train_data.collate, num_workers=cfg.workers,
                            generator=torch.Generator().manual_seed(cfg.seed),
                            pin_memory=proc.device.type == "cuda")
        started, elapsed0 = time.time(), self.elapsed
        t_log, step_log = time.time(), self.step
        for batch in loader:
            logs = self._train_step(to_device(batch, proc.device))
            self.step += 1
            self.elapsed = elapsed0 + time.time() - started
            if self.step % cfg.log_every == 0:
                record = self._reduce(logs)
                now = time.time()
                record.update(step=self.step, lr=self.scheduler.get_last_lr()[0],
                              sec_per_step=(now - t_log) / (self.step - step_log), elapsed=round(self.elapsed, 3))
                t_log, step_log = now, self.step
                if logf is not None:
                    logf.write(json.dumps(record) + "\n")
                    logf.flush()
                    log.info("step %d/%d loss %.4f (coarse %.4f, fine %.4f) lr %.3g, %.2f s/step", self.step,
                             cfg.steps, record["loss"], record["loss_c"], record["loss_f"], record["lr"],
                             record["sec_per_step"])
            if self.step % cfg.checkpoint_every == 0 or self.step == stop:
                self.save()
            if logf is not None and (self.step % cfg.validate_every == 0 or self.step == cfg.steps):
                self._validate(logf)


def train(cfg: TrainConfig, *, until: int | None = None) -> Path:
    """Run (or resume, when ``out_dir/last.pt`` exists) training; returns the path of the last checkpoint."""
    return Trainer(cfg).run(until)
