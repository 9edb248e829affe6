from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from loftr import LoFTR
from loftr.cli import main
from loftr.train.config import TrainConfig
from loftr.train.trainer import train
from loftr.weights import save_safetensors

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


TINY = {"match_coarse": {"train_pad_num_gt_min": 4}}  # 64x64 inputs give 8x8 coarse maps: few ground-truth pads


def _cfg(photo_dir: Path, out: Path, **changes) -> TrainConfig:
    values = dict(images=str(photo_dir), out_dir=str(out), size=64, batch_size=2, steps=3, warmup=1,
                  checkpoint_every=2, validate_every=100, val_pairs=2, model_overrides=TINY, log_every=1)
    return TrainConfig(**{**values, **changes})


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_is_exact(photo_dir: Path, tmp_path: Path) -> None:
    import dataclasses

    from loftr.train.runlog import read_log
    from loftr.train.trainer import Trainer

    straight = Trainer(_cfg(photo_dir, tmp_path / "straight"))
    straight.run()
    cfg = _cfg(photo_dir, tmp_path / "resumed")
    train(cfg, until=1)  # stops after step 1 (mid data-epoch, between checkpoints) with a checkpoint
    state = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert state["step"] == 1 and len(state["rng"]) == 1 and state["config"]["model_overrides"] == TINY
    resumed = Trainer(cfg)
    assert resumed.step == 1
    resumed.run()
    assert _same_state(straight.model.state_dict(), resumed.model.state_dict())
    assert resumed.optimizer.state_dict()["state"][0]["step"] == 3
    records, vals = read_log(tmp_path / "resumed")
    assert [r["step"] for r in records] == [1, 2, 3] and [v["step"] for v in vals] == [3]
    assert records[0]["elapsed"] <= records[-1]["elapsed"]
    # a checkpoint of the older format (no RNG states, config, time) still resumes, though not exactly: the random
    # ground-truth pads are drawn differently — which the comparison above would have caught
    old = tmp_path / "old"
    train(dataclasses.replace(cfg, out_dir=str(old)), until=1)
    state = torch.load(old / "last.pt", weights_only=True)
    torch.save({k: state[k] for k in ("model", "optimizer", "scheduler", "step", "preset")}, old / "last.pt")
    legacy = Trainer(dataclasses.replace(cfg, out_dir=str(old)))
    assert legacy.step == 1 and legacy.elapsed > 0  # the time so far estimated from log.jsonl
    legacy.run()
    assert not _same_state(straight.model.state_dict(), legacy.model.state_dict())


def test_cli_train_resume_export_and_plot(photo_dir: Path, tmp_path: Path, capsys) -> None:
    from loftr import LoFTR
    from loftr.weights import describe

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"size": 64, "batch_size": 2, "steps": 2, "warmup": 1, "checkpoint_every": 1,
                                  "validate_every": 2, "val_pairs": 2, "log_every": 1, "model_overrides": TINY}))
    run = tmp_path / "runs" / "tiny"
    args = ["train", "--config", str(config), "--data", str(photo_dir), "--out", str(run)]
    assert main(args) == 0
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 2
    capsys.readouterr()
    assert main(args) != 0  # an existing run is not overwritten
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--steps", "3"]) == 0  # the run's config.json is the base
    saved = json.loads((run / "config.json").read_text())
    assert saved["steps"] == 3 and saved["size"] == 64 and saved["images"] == str(photo_dir)
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 3
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "nothing"), "--resume"]) != 0
    assert "nothing to resume" in capsys.readouterr().err
    config.write_text(json.dumps({"stepz": 3}))
    assert main(args[:-2] + ["--out", str(tmp_path / "other")]) != 0
    assert "unknown training config keys stepz" in capsys.readouterr().err

    accuracy = tmp_path / "accuracy.json"
    accuracy.write_text(json.dumps({"Motorcycle precision@3px": 0.81, "WxBS": {"1px": 0.023}}))
    weights, card = tmp_path / "out" / "tiny.safetensors", tmp_path / "out" / "CARD.md"
    assert main(["export-weights", str(run), "--out", str(weights), "--card", str(card),
                 "--accuracy", str(accuracy)]) == 0
    model = LoFTR("tiny_ds", weights=weights)
    trained = torch.load(run / "last.pt", weights_only=True)["model"]
    for key, value in model.state_dict().items():
        want = trained[key].half().float() if trained[key].is_floating_point() else trained[key]
        assert torch.equal(value, want), key
    assert describe(weights)["metadata"]["step"] == "3"
    text = card.read_text()
    assert "`tiny_ds`" in text and "steps: 3 of 3" in text and "training time:" in text
    assert "Last validation (step 3)" in text and "| precision@1px |" in text
    assert "| Motorcycle precision@3px | 0.81 |" in text and "| WxBS / 1px | 0.023 |" in text

    plot = tmp_path / "curve.png"
    assert main(["train-plot", str(run), "--out", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a run that changed the architecture cannot become a preset-tagged file
    state = torch.load(run / "last.pt", weights_only=True)
    state["config"]["model_overrides"] = {"match_coarse": {"match_type": "sinkhorn"}}
    torch.save(state, tmp_path / "ot.pt")
    capsys.readouterr()
    assert main(["export-weights", str(tmp_path / "ot.pt"), "--out", str(tmp_path / "ot.safetensors")]) != 0
    assert "match_coarse.match_type" in capsys.readouterr().err


def test_python_m_loftr_train_keeps_working(photo_dir: Path, tmp_path: Path) -> None:
    from loftr.train.__main__ import build_parser, run

    out = tmp_path / "legacy"
    argv = [str(photo_dir), str(out), "--size", "64", "--batch-size", "1", "--warmup", "1", "--val-pairs", "1",
            "--model-overrides", json.dumps(TINY), "--no-bf16"]
    assert run(build_parser().parse_args(argv + ["--steps", "1"])) == 0
    before = torch.load(out / "last.pt", weights_only=True)["model"]
    assert run(build_parser().parse_args(argv + ["--steps", "2", "--bf16"])) == 0  # resumes by itself; bf16 backbone
    after = torch.load(out / "last.pt", weights_only=True)
    assert after["step"] == 2 and after["config"]["bf16"] is True
    assert not torch.equal(before["backbone.conv1.weight"], after["model"]["backbone.conv1.weight"])
    assert all(torch.isfinite(v).all() for v in after["model"].values() if v.is_floating_point())


def test_gradient_scaler_path(photo_dir: Path, tmp_path: Path) -> None:
    """fp16 runs on CUDA only; the scaler's code path (scale, unscale before clipping, step, update, saved state)
    is the same with a CPU scaler."""
    from loftr.train.trainer import Trainer

    trainer = Trainer(_cfg(photo_dir, tmp_path / "scaled", steps=2, checkpoint_every=1))
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    start = trainer.model.backbone.conv1.weight.detach().clone()
    trainer.run()
    state = torch.load(tmp_path / "scaled" / "last.pt", weights_only=True)
    assert state["scaler"]["scale"] == 1024.0 and state["scaler"]["_growth_tracker"] == 2
    assert not torch.equal(start, trainer.model.backbone.conv1.weight)


def test_config_checks(photo_dir: Path, tmp_path: Path) -> None:
    from loftr.train.config import config_from_dict
    from loftr.train.trainer import Trainer

    with pytest.raises(ValueError, match="needs CUDA"):
        Trainer(_cfg(photo_dir, tmp_path / "fp16", fp16=True, device="cpu"))
    with pytest.raises(ValueError, match="dataset must be one of"):
        _cfg(photo_dir, tmp_path, dataset="kitti")
    with pytest.raises(ValueError, match="'steps' must be int"):
        config_from_dict({"images": "a", "out_dir": "b", "steps": "10"})
    with pytest.raises(ValueError, match="has no field 'thrs'"):
        Trainer(_cfg(photo_dir, tmp_path / "bad", model_overrides={"match_coarse": {"thrs": 0.1}}))
    assert config_from_dict({"images": "a", "out_dir": "b", "lr": 1}).lr == 1.0


def test_training_on_scannet_and_megadepth_layouts(tmp_path: Path) -> None:
    from loftr.train.runlog import read_log

    from .scenes import wall, write_megadepth, write_scannet

    root, index = write_scannet(tmp_path / "scannet", [wall()])
    cfg = TrainConfig(images=str(root), out_dir=str(tmp_path / "sn"), dataset="scannet", index=str(index), size=96,
                      batch_size=2, steps=2, warmup=1, checkpoint_every=2, validate_every=2, val_pairs=2,
                      log_every=1, model_overrides={"match_coarse": {"train_pad_num_gt_min": 8}})
    train(cfg)
    records, vals = read_log(tmp_path / "sn")
    assert all(r["gt"] > 50 and r["loss"] > 0 for r in records)  # depth ground truth reached the loss
    assert "with_ground_truth" in vals[-1]
    # MegaDepth, optimal transport, sparse supervision (dustbins): the bin score learns
    info = write_megadepth(tmp_path / "megadepth", [wall()])
    cfg = TrainConfig(images=str(tmp_path / "megadepth"), out_dir=str(tmp_path / "md"), dataset="megadepth",
                      index=str(info), size=64, batch_size=2, steps=2, warmup=1, lr=1e-2, checkpoint_every=2,
                      validate_every=2, val_pairs=1, log_every=1, sparse=True,
                      model_overrides={"match_coarse": {"match_type": "sinkhorn", "train_pad_num_gt_min": 4}})
    train(cfg)
    state = torch.load(tmp_path / "md" / "last.pt", weights_only=True)
    assert state["model"]["coarse_matching.bin_score"].item() != 1.0
    assert all(r["gt"] > 20 for r in read_log(tmp_path / "md")[0])


def test_validation_ground_truth_from_depth(tmp_path: Path) -> None:
    import numpy as np

    from loftr.train.datasets import ScanNetPairs, collate_depth
    from loftr.train.supervision import grid_points, warp
    from loftr.train.validation import true_positions

    from .scenes import CAMERAS, K160, plane_homography, wall, write_scannet

    root, index = write_scannet(tmp_path, [wall()])
    batch = collate_depth([ScanNetPairs(root, index, size=(96, 72))[0]])
    pts = grid_points((9, 12), 8, 1, torch.device("cpu"))[0].float() + 3.0
    gt, ok = true_positions(batch, pts, torch.zeros(len(pts), dtype=torch.long))
    s = 160 / 96
    S = np.diag([s, s, 1.0])
    H = np.linalg.inv(S) @ plane_homography(K160, K160, CAMERAS[0], CAMERAS[1], wall()) @ S
    want = warp(pts[None].double(), torch.from_numpy(H)[None])[0]
    assert ok.sum() > 60
    torch.testing.assert_close(gt[ok], want[ok], atol=1e-2, rtol=0)


def test_fine_only_keeps_the_coarse_stage(photo_dir: Path, tmp_path: Path) -> None:
    """--fine-only: the parameters and BatchNorm statistics that decide the coarse matches stay as they were (also
    across a validation, which puts the model back in train mode); the fine stage learns."""
    from loftr.train.trainer import Trainer, coarse_modules

    with pytest.raises(ValueError, match="needs --init"):  # a frozen random coarse stage would be pointless
        _cfg(photo_dir, tmp_path / "fine", fine_only=True)
    init = LoFTR("tiny_ds", weights="tiny_ds")
    init.config = dataclasses.replace(init.config, fine_max_std=0.8)  # a match filter of its own (see below)
    init = save_safetensors(init, tmp_path / "init.safetensors", preset="tiny_ds")
    trainer = Trainer(_cfg(photo_dir, tmp_path / "fine", fine_only=True, init=str(init), steps=3, validate_every=1))
    coarse = {id(p) for m in coarse_modules(trainer.model) for p in m.parameters()}
    names = {n for n, p in trainer.model.named_parameters() if id(p) in coarse}
    assert any(n.startswith("loftr_coarse.") for n in names) and "backbone.conv1.weight" in names
    assert not any(n.startswith(("loftr_fine.", "fine_preprocess.", "backbone.layer1_outconv")) for n in names)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    after = trainer.model.state_dict()
    coarse_keys = [k for k in before if k.startswith(("loftr_coarse.", "backbone.layer3.", "backbone.bn1.",
                                                       "backbone.layer1.", "backbone.conv1."))]
    assert coarse_keys and all(torch.equal(before[k], after[k]) for k in coarse_keys)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("loftr_fine.") for k in changed)
    assert any(k.startswith("backbone.layer1_outconv2.") for k in changed)  # its BatchNorm trains too
    # the match filter of the --init weights survives a resume and goes into the exported file
    limit = trainer.model.config.fine_max_std
    assert limit == 0.8 and torch.load(trainer.last, weights_only=True)["fine_max_std"] == limit
    resumed = Trainer(_cfg(photo_dir, tmp_path / "fine", fine_only=True, init=str(init), steps=4, validate_every=1))
    assert resumed.step == 3 and resumed.model.config.fine_max_std == limit
    assert main(["export-weights", str(tmp_path / "fine"), "--out", str(tmp_path / "f.safetensors")]) == 0
    assert LoFTR("tiny_ds", weights=tmp_path / "f.safetensors").config.fine_max_std == limit


def test_freeze_bn_holds_the_batchnorm_statistics_and_trains_the_rest(photo_dir: Path, tmp_path: Path) -> None:
    """--freeze-bn: every BatchNorm's running statistics stay those of --init (also across a validation, which puts
    the model back in train mode), while the weights, BatchNorm affines included, learn."""
    from loftr.train.trainer import Trainer

    with pytest.raises(ValueError, match="needs --init"):
        _cfg(photo_dir, tmp_path / "bn", freeze_bn=True)
    init = save_safetensors(LoFTR("tiny_ds", weights="tiny_ds"), tmp_path / "init.safetensors", preset="tiny_ds")
    trainer = Trainer(_cfg(photo_dir, tmp_path / "bn", freeze_bn=True, init=str(init), steps=3, validate_every=1))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    after = trainer.model.state_dict()
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "backbone.conv1.weight" in changed and "backbone.bn1.weight" in changed
    moving = Trainer(_cfg(photo_dir, tmp_path / "moving", init=str(init), steps=1))
    moving.run()  # without the option the statistics move
    assert not all(torch.equal(before[k], moving.model.state_dict()[k]) for k in stats)


def test_freeze_backbone_keeps_the_local_features_and_trains_the_transformers(photo_dir: Path, tmp_path: Path) -> None:
    """--freeze-backbone: every backbone tensor (weights and BatchNorm statistics) stays that of --init; the coarse
    transformer and the fine stage learn."""
    from loftr.train.trainer import Trainer

    with pytest.raises(ValueError, match="needs --init"):
        _cfg(photo_dir, tmp_path / "fb", freeze_backbone=True)
    init = save_safetensors(LoFTR("tiny_ds", weights="tiny_ds"), tmp_path / "init.safetensors", preset="tiny_ds")
    with pytest.raises(ValueError, match="exclude each other"):
        _cfg(photo_dir, tmp_path / "fb", freeze_backbone=True, fine_only=True, init=str(init))
    trainer = Trainer(_cfg(photo_dir, tmp_path / "fb", freeze_backbone=True, init=str(init), steps=3, validate_every=1))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    after = trainer.model.state_dict()
    backbone = [k for k in before if k.startswith("backbone.")]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("loftr_coarse.") for k in changed) and any(k.startswith("loftr_fine.") for k in changed)


def test_weights_metadata_names_every_data_source_and_the_init() -> None:
    from loftr.train.export import data_summary

    cfg = {"dataset": "mixed", "images": "../shared/data/photos", "scene_share": 0.3, "posed_share": 0.45,
           "posed": "../shared/data/posed_train", "posed_holdout": "cup-table", "extreme_share": 0.3}
    assert data_summary(cfg) == ("mixed: posed 0.45 (posed_train, cup-table held out), scenes 0.3, "
                                 "photos 0.25 (photos, extreme 0.3)")
    assert data_summary({"images": "data/photos"}) == "photos: photos"
    assert data_summary({**cfg, "posed_share": 0.7}) == ("mixed: posed 0.7 (posed_train, cup-table held out), "
                                                         "scenes 0.3")


def test_blend_weights_interpolates_two_files_of_one_architecture(tmp_path: Path, capsys) -> None:
    from loftr.weights import read_state_dict

    shipped = save_safetensors(LoFTR("tiny_ds", weights="tiny_ds"), tmp_path / "a.safetensors", preset="tiny_ds",
                               extra={"trained_on": "photos"})
    other = LoFTR("tiny_ds", weights="tiny_ds")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01 * torch.randn_like(p))
    other = save_safetensors(other, tmp_path / "b.safetensors", preset="tiny_ds", extra={"trained_on": "posed"})
    assert main(["blend-weights", str(shipped), str(other), "--share", "0.25", "--out", str(tmp_path / "m.safetensors")]) == 0
    (a, _), (b, _), (m, meta) = (read_state_dict(p, kind=".safetensors") for p in (shipped, other, tmp_path / "m.safetensors"))
    w = "backbone.conv1.weight"
    torch.testing.assert_close(m[w].float(), 0.75 * a[w].float() + 0.25 * b[w].float(), atol=1e-3, rtol=1e-3)
    assert not torch.equal(m[w], a[w]) and m[w].dtype == torch.float16 and meta["preset"] == "tiny_ds"
    assert "0.75 of a.safetensors" in meta["trained_on"] and "0.25 of b.safetensors" in meta["trained_on"]
    assert "photos" in meta["trained_on"] and "posed" in meta["trained_on"]
    assert LoFTR("tiny_ds", weights=tmp_path / "m.safetensors") is not None  # loads as a model
    out = str(tmp_path / "x.safetensors")
    assert main(["blend-weights", str(shipped), str(other), "--share", "1.5", "--out", out]) != 0
    assert "must be in [0, 1], got 1.5" in capsys.readouterr().err
    small = save_safetensors(LoFTR("outdoor_ds"), tmp_path / "o.safetensors", preset="outdoor_ds")
    assert main(["blend-weights", str(shipped), str(small), "--out", out]) != 0
    assert "not weights of one architecture" in capsys.readouterr().err and not Path(out).exists()
