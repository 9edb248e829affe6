from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from loftr.cli import main
from loftr.train.trainer import TrainConfig, train

from ..conftest import PHOTOS


def test_train_resume_and_export(tmp_path: Path, capsys) -> None:
    if not PHOTOS.exists():
        pytest.skip("no shared photos")
    cfg = TrainConfig(images=str(PHOTOS), out_dir=str(tmp_path / "run"), size=96, batch_size=2, steps=2,
                      checkpoint_every=1, validate_every=2, val_pairs=2, warmup=1)
    last = train(cfg)
    state = torch.load(last, weights_only=True)
    assert state["step"] == 2
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("val" in x for x in lines)
    # resuming a finished run does nothing more; raising the step budget continues from step 2
    train(TrainConfig(**{**cfg.__dict__, "steps": 3}))
    assert torch.load(last, weights_only=True)["step"] == 3
    assert main(["weights", "export", str(last), str(tmp_path / "w.safetensors"), "--preset", "tiny_ds"]) == 0
    assert "fp16" in capsys.readouterr().out
    assert main(["weights", "info", str(tmp_path / "w.safetensors")]) == 0
