"""Where a training process runs: its device and its rank in a ``torch.distributed`` (torchrun) run."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist



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
