"""Data-parallel training: two CPU processes (gloo), joined through torchrun's environment variables."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from loftr.train.runlog import read_log
from loftr.train.config import TrainConfig
from loftr.train.sampling import StepSampler
from loftr.train.trainer import Trainer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg_json: str, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = Trainer(TrainConfig(**json.loads(cfg_json)))
    assert trainer.proc.world == world and trainer.proc.rank == rank
    trainer.run()
    samples = StepSampler(len(trainer.train_data), trainer.cfg.batch_size, 0, trainer.cfg.steps, world=world,
                          rank=rank, seed=trainer.cfg.seed, endless=trainer.endless)  # what this rank trained on
    torch.save({"model": trainer.model.state_dict(), "samples": list(samples)}, Path(out) / f"rank{rank}.pt")


def test_two_processes_train_one_model(photo_dir: Path, tmp_path: Path) -> None:
    cfg = dict(images=str(photo_dir), out_dir=str(tmp_path / "run"), size=64, batch_size=1, steps=3, warmup=1,
               checkpoint_every=2, validate_every=3, val_pairs=1, log_every=1, device="cpu",
               model_overrides={"match_coarse": {"train_pad_num_gt_min": 4}})
    mp.spawn(_worker, args=(2, _free_port(), json.dumps(cfg), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # every parameter identical on both ranks (gradients averaged), and different from the initialisation
    params = [n for n, _ in torch.nn.Module.named_parameters(_model())]
    for name in params:
        assert torch.equal(ranks[0]["model"][name], ranks[1]["model"][name]), name
    assert not torch.equal(ranks[0]["model"][params[0]], _model().state_dict()[params[0]])
    # each rank took its own samples
    assert len(ranks[0]["samples"]) == 3 and not set(ranks[0]["samples"]) & set(ranks[1]["samples"])
    # only rank 0 wrote: one loss record per step, one checkpoint with both ranks' RNG states
    records, vals = read_log(tmp_path / "run")
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [r["step"] for r in records] == [1, 2, 3] and len(lines) == 4 and [v["step"] for v in vals] == [3]
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["step"] == 3 and state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    for name in params:
        assert torch.equal(state["model"][name], ranks[0]["model"][name])


def _model() -> torch.nn.Module:
    from loftr.train.trainer import build_model

    torch.manual_seed(0)
    return build_model(TrainConfig(images="-", out_dir="-", model_overrides={"match_coarse": {"train_pad_num_gt_min": 4}}))
