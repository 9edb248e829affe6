"""Training loop with resumable checkpoints, validation on fixed homographic pairs, and export to safetensors."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..config import get_preset
from ..model import LoFTR
from .data import HomographyPairs, collate, list_images
from .losses import coarse_focal_loss, fine_l2_std_loss
from .supervision import coarse_supervision, fine_supervision, warp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    images: str
    out_dir: str
    preset: str = "tiny_ds"
    size: int = 256
    batch_size: int = 4
    steps: int = 20000
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 300
    grad_clip: float = 0.5
    checkpoint_every: int = 100
    validate_every: int = 500
    val_pairs: int = 32
    seed: int = 0
    threads: int = 0  # 0: torch's default


def _schedule(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return 0.1 + 0.9 * step / cfg.warmup
    progress = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def training_loss(model: LoFTR, image0: torch.Tensor, image1: torch.Tensor, H: torch.Tensor,
                  valid1: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Coarse focal + fine L2-std loss of a batch of homographic pairs, and scalar logs."""
    cfg = model.config
    stride_c, stride_f = cfg.resolution
    hw0 = (image0.shape[2] // stride_c, image0.shape[3] // stride_c)
    hw1 = (image1.shape[2] // stride_c, image1.shape[3] // stride_c)
    sup = coarse_supervision(H, hw0, hw1, stride_c, valid1)
    out = model.run(image0, image1, supervision=sup)
    loss_c = coarse_focal_loss(out.conf_matrix, sup.conf_gt)
    sel = out.coarse
    target = fine_supervision(H, sel.b_ids, sel.i_ids, sel.j_ids, out.hw0_c, out.hw1_c, stride_c, stride_f,
                              cfg.fine_window_size)
    loss_f = fine_l2_std_loss(out.expec_f, target)
    loss = loss_c + loss_f
    return loss, {"loss": loss.item(), "loss_c": loss_c.item(), "loss_f": loss_f.item(),
                  "gt": int(sup.b_ids.numel()), "pred": int((sel.mconf > 0).sum())}


@torch.no_grad()
def validate(model: LoFTR, pairs: HomographyPairs, batch_size: int) -> dict[str, float]:
    """Matches per pair and precision at 1/3 px (reprojection by the true homography) on fixed pairs."""
    was_training = model.training
    model.eval()
    total, good1, good3 = 0, 0, 0
    for start in range(0, len(pairs), batch_size):
        batch = collate([pairs[k] for k in range(start, min(start + batch_size, len(pairs)))])
        m = model.match(batch.image0, batch.image1)
        if len(m):
            proj = warp(m.keypoints0[:, None].double(), batch.H_0to1[m.batch_indexes].double())[:, 0]
            err = (proj - m.keypoints1.double()).norm(dim=-1)
            good1 += int((err < 1).sum())
            good3 += int((err < 3).sum())
        total += len(m)
    model.train(was_training)
    n = len(pairs)
    return {"matches_per_pair": total / n, "precision@1px": good1 / max(total, 1), "precision@3px": good3 / max(total, 1)}


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) training; returns the path of the last checkpoint. Logs JSON lines to out_dir/log.jsonl."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = LoFTR(cfg.preset)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, cfg))
    last = out / "last.pt"
    step = 0
    if last.exists():
        state = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = int(state["step"])
        log.info("resumed from %s at step %d", last, step)
    images = list_images(cfg.images)
    val_images = images[::8]  # every 8th photo also gives the fixed validation pairs (different crops/warps)
    val = HomographyPairs(val_images, cfg.size, cfg.val_pairs, seed=cfg.seed + 1000)
    data = HomographyPairs(images, cfg.size, length=cfg.batch_size * cfg.checkpoint_every, seed=cfg.seed)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    logf = open(out / "log.jsonl", "a")
    while step < cfg.steps:
        data.epoch = step // cfg.checkpoint_every
        loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=False, collate_fn=collate, num_workers=0)
        t0 = time.time()
        for batch in loader:
            loss, logs = training_loss(model, batch.image0, batch.image1, batch.H_0to1, batch.valid1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            if step % 10 == 0:
                logs.update(step=step, lr=sched.get_last_lr()[0], sec_per_step=(time.time() - t0) / 10)
                t0 = time.time()
                logf.write(json.dumps(logs) + "\n")
                logf.flush()
            if step >= cfg.steps:
                break
        _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                      "step": step, "preset": cfg.preset}, last)
        if step % cfg.validate_every < cfg.checkpoint_every or step >= cfg.steps:
            metrics = validate(model, val, cfg.batch_size)
            metrics["step"] = step
            logf.write(json.dumps({"val": metrics}) + "\n")
            logf.flush()
            _save_atomic({"model": model.state_dict(), "step": step, "preset": cfg.preset, "val": metrics},
                         out / f"step{step:06d}.pt")
    logf.close()
    return last
