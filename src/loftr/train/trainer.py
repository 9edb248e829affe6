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

The pieces: :mod:`.config` (TrainConfig), :mod:`.sampling` (datasets, held-out split, step sampler),
:mod:`.objective` (supervision and loss of a batch), :mod:`.validation`, :mod:`.processes` (devices and ranks);
this module holds the loop, its schedule and its checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from ..config import LoFTRConfig, get_preset
from ..model import LoFTR
from .config import TrainConfig, apply_overrides, architecture_overrides
from .data import to_device
from .objective import Batch, LossModule, log_values
from .processes import setup_processes
from .runlog import read_log, training_seconds
from .sampling import StepSampler, build_datasets
from .validation import validate

log = logging.getLogger(__name__)


def build_model(cfg: TrainConfig) -> LoFTR:
    """The model of a run: its preset with ``model_overrides`` (keeping the preset name when they are training-only)."""
    config: LoFTRConfig = apply_overrides(get_preset(cfg.preset), cfg.model_overrides)
    model = LoFTR(cfg.preset) if not cfg.model_overrides else LoFTR(config=config)
    if not architecture_overrides(cfg.model_overrides):
        model.preset = cfg.preset
    return model


def coarse_modules(model: LoFTR) -> list[nn.Module]:
    """The modules whose outputs decide the coarse matches: the ResNet stem and stages, the 1/8 projection and the
    coarse transformer. What is left (the FPN merges down to the fine map, the window pre-processing and the fine
    transformer) only moves matches inside their windows."""
    fpn = set(model.backbone.fpn_names())
    return [m for name, m in model.backbone.named_children() if name not in fpn] + [model.loftr_coarse]


def held_modules(model: LoFTR, cfg: TrainConfig) -> list[nn.Module]:
    """The modules that stay as --init gave them: the coarse stage (--fine-only), the ResNet-FPN
    (--freeze-backbone), or none."""
    if cfg.fine_only:
        return coarse_modules(model)
    return [model.backbone] if cfg.freeze_backbone else []


def freeze(modules: list[nn.Module]) -> None:
    """No gradients for the parameters of ``modules`` and BatchNorm statistics held (eval mode); call again after
    any ``model.train()``."""
    for module in modules:
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)


def hold_batchnorm(model: nn.Module) -> None:
    """Every BatchNorm in eval mode: normalised by the running statistics it has, which no longer move (its affine
    still learns); call again after any ``model.train()``."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _schedule(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return 0.1 + 0.9 * step / cfg.warmup
    progress = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


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
        self.frozen = held_modules(self.model, cfg)
        self._hold()
        if not restored and self.proc.rank:
            torch.manual_seed(cfg.seed + self.proc.rank)  # distinct random ground-truth pads per rank
        self.train_data, self.val_data, self.endless = build_datasets(cfg)
        self.loss_module: nn.Module = LossModule(self.model, cfg.sparse, cfg.depth_check)
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
        if state.get("fine_max_std") is not None:  # the match filter of the --init weights (see load_weights)
            self.model.config = replace(self.model.config, fine_max_std=float(state["fine_max_std"]))
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
                 "fine_max_std": self.model.config.fine_max_std, "config": asdict(self.cfg), "rng": states,
                 "world_size": self.proc.world, "elapsed": self.elapsed}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        _save_atomic(state, self.last)

    def _hold(self) -> None:
        """What stays as --init gave it: the frozen modules (--fine-only, --freeze-backbone) and the BatchNorm
        statistics (--freeze-bn)."""
        freeze(self.frozen)
        if self.cfg.freeze_bn:
            hold_batchnorm(self.model)

    def _train_step(self, batch: Batch) -> torch.Tensor:
        cfg = self.cfg
        self._hold()  # (validation switches the model back to train mode as a whole)
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
        return log_values(logs.cpu())

    def _validate(self, logf: Any) -> None:
        metrics = validate(self.model, self.val_data, self.cfg.batch_size, self.proc.device)
        metrics["step"] = self.step
        logf.write(json.dumps({"val": metrics}) + "\n")
        logf.flush()
        log.info("step %d validation: %s", self.step, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        _save_atomic({"model": self.model.state_dict(), "step": self.step, "preset": self.cfg.preset,
                      "fine_max_std": self.model.config.fine_max_std, "config": asdict(self.cfg), "val": metrics},
                     self.out / f"step{self.step:06d}.pt")

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
            out_of_time = self._out_of_time(started)
            if self.step % cfg.checkpoint_every == 0 or self.step == stop or out_of_time:
                self.save()
            if logf is not None and (self.step % cfg.validate_every == 0 or self.step == cfg.steps or out_of_time):
                self._validate(logf)
            if out_of_time:
                log.info("time budget of %g minutes spent at step %d", cfg.minutes, self.step)
                break

    def _out_of_time(self, started: float) -> bool:
        """Whether the ``minutes`` budget of this process is spent (rank 0 decides for every rank)."""
        if self.cfg.minutes <= 0:
            return False
        flag = torch.tensor([float(time.time() - started > self.cfg.minutes * 60)], device=self.proc.device)
        if self.proc.world > 1:
            dist.broadcast(flag, 0)
        return bool(flag.item())


def train(cfg: TrainConfig, *, until: int | None = None) -> Path:
    """Run (or resume, when ``out_dir/last.pt`` exists) training; returns the path of the last checkpoint."""
    return Trainer(cfg).run(until)
