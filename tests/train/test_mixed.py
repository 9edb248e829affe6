"""Mixed training data: whole batches of one source (3D scenes or homographic photos), chosen reproducibly, and a run
of the trainer that sees both kinds of supervision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from loftr.train.data import HomographyPairs, PairSample, list_images
from loftr.train.datasets import DepthPairSample
from loftr.train.mixed import MixedPairs
from loftr.train.sampling import StepSampler
from loftr.train.scenes import ScenePairs


def _mixed(photo_dir: Path, batch: int, share: float = 0.5) -> MixedPairs:
    images = list_images(photo_dir)
    scenes = ScenePairs(images, (64, 48), length=8, seed=0)
    photos = HomographyPairs(images, 48, length=8, seed=1)
    return MixedPairs([scenes, photos], [share, 1 - share], batch, seed=0, length=8)


def test_every_batch_of_the_step_sampler_is_one_source_and_both_occur(photo_dir: Path) -> None:
    data = _mixed(photo_dir, batch=3)
    for world, rank in ((1, 0), (2, 1)):
        order = list(StepSampler(len(data), 3, 0, 20, world=world, rank=rank, endless=True))
        kinds = [data.source_of(g) == 0 for g in order]
        batches = [kinds[k:k + 3] for k in range(0, len(kinds), 3)]
        assert all(len(set(b)) == 1 for b in batches)
        assert {b[0] for b in batches} == {True, False}  # 20 batches at 50 %: both sources


def test_items_come_from_their_source_and_collate_by_kind(photo_dir: Path) -> None:
    data = _mixed(photo_dir, batch=2)
    first = next(n for n in range(40) if data.source_of(2 * n) == 0)
    second = next(n for n in range(40) if not data.source_of(2 * n) == 0)
    depth = data.collate([data[2 * first], data[2 * first + 1]])
    homog = data.collate([data[2 * second], data[2 * second + 1]])
    assert isinstance(depth, DepthPairSample) and depth.image0.shape == (2, 1, 48, 64)
    assert isinstance(homog, PairSample) and homog.image0.shape == (2, 1, 48, 48)
    assert torch.equal(data[2 * first].image0, data.sources[0][2 * first].image0)  # the item of its source, same index
    with pytest.raises(ValueError, match="mixes sample types"):
        data.collate([data[2 * first], data[2 * second]])


def test_share_zero_and_one_take_a_single_source(photo_dir: Path) -> None:
    assert not any(_mixed(photo_dir, 2, 0.0).source_of(g) == 0 for g in range(50))
    assert all(_mixed(photo_dir, 2, 1.0).source_of(g) == 0 for g in range(50))
    with pytest.raises(ValueError, match="shares"):
        _mixed(photo_dir, 2, 1.5)


def test_mixed_dataset_trains_through_the_trainer(photo_dir: Path, tmp_path: Path) -> None:
    from loftr.train.config import TrainConfig
    from loftr.train.trainer import train

    cfg = TrainConfig(images=str(photo_dir), out_dir=str(tmp_path / "run"), dataset="mixed", size=128, batch_size=1,
                      steps=6, warmup=1, checkpoint_every=3, validate_every=6, val_pairs=1, holdout=5, log_every=1)
    state = torch.load(train(cfg), weights_only=True)
    assert state["step"] == 6
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("val" in r and "with_ground_truth" in r["val"] for r in records)  # validated on 3D pairs
    with pytest.raises(ValueError, match="scene_share"):
        TrainConfig(images="x", out_dir="y", dataset="mixed", scene_share=2.0)


def test_scene_pairs_without_fine_train_the_coarse_matching_only(photo_dir: Path) -> None:
    """--no-scene-fine: a scene batch gives a fine loss of exactly 0 and no gradient to the fine transformer, while
    the coarse stage still learns; the same pairs with their fine targets do train the fine stage."""
    from loftr.model import LoFTR
    from loftr.train.config import TrainConfig
    from loftr.train.datasets import collate_depth
    from loftr.train.objective import loss_terms

    images = list_images(photo_dir)
    torch.manual_seed(0)
    model = LoFTR("tiny_ds")
    measured = {}
    for fine in (True, False):
        pairs = ScenePairs(images, (128, 96), length=2, seed=0, fine=fine)
        batch = collate_depth([pairs[0], pairs[1]])
        assert batch.fine is fine
        model.zero_grad(set_to_none=True)
        loss, logs = loss_terms(model, batch)
        loss.backward()
        fine_grad = sum(float(p.grad.abs().sum()) for p in model.loftr_fine.parameters() if p.grad is not None)
        coarse_grad = sum(float(p.grad.abs().sum()) for p in model.loftr_coarse.parameters() if p.grad is not None)
        measured[fine] = (float(logs[2]), fine_grad, coarse_grad)
    assert measured[True][0] > 0 and measured[True][1] > 0
    assert measured[False][0] == 0.0 and measured[False][1] == 0.0
    assert measured[False][2] > 0  # the coarse matching still learns from the scenes
    assert TrainConfig(images="x", out_dir="y", dataset="mixed", scene_fine=False).scene_fine is False
