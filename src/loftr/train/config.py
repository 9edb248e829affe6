"""Training configuration: :class:`TrainConfig` (a frozen dataclass, ``config.json`` of a run) and the model
overrides a run may apply to its preset."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


DATASETS = ("photos", "scenes", "mixed", "scannet", "megadepth")
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
    size: int = _f(256, "photos: crop side; scenes, mixed, scannet: width (height 3/4 of it; mixed: the photo "
                          "crops are that height, square); megadepth: longest side, padded square")
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
    dataset: str = _f("photos", "photos (homographic pairs), scenes (synthetic 3D scenes textured from the photos, "
                                "exact depth), mixed (batches of scenes, photos, teacher and posed pairs), scannet or "
                                "megadepth")
    scene_share: float = _f(0.5, "mixed: share of the batches that are synthetic 3D scenes (the rest: homographic "
                                 "photo pairs, teacher pairs and posed pairs)")
    scene_fine: bool = _f(True, "scenes/mixed: the synthetic 3D scenes also train the fine stage (--no-scene-fine: "
                                "the coarse matching only; their rendered textures held the sub-pixel accuracy back)")
    teacher: str = _f("", "mixed: teacher caches (.npz of `loftr teacher-cache`, names relative to the photo "
                          "folder; several comma-separated): real photo pairs with verified matches, coarse "
                          "supervision only")
    teacher_share: float = _f(0.0, "mixed: share of the batches that are teacher pairs (needs --teacher)")
    posed: str = _f("", "mixed: posed training scenes with SfM tracks (a folder of scenes such as "
                        "../shared/data/posed_train, or comma-separated scene folders): real wide-baseline pairs "
                        "supervised by tracks and epipolar geometry")
    posed_teacher: str = _f("", "mixed: teacher caches of posed scene pairs (`loftr teacher-cache SCENE/images "
                                "--pairs SCENE/pairs.txt --cameras SCENE/cameras.json`, names relative to the photo "
                                "folder; comma-separated): their verified matches join those pairs' tracks as "
                                "positives, and those pairs are drawn 3x as often")
    posed_share: float = _f(0.0, "mixed: share of the batches that are posed pairs (needs --posed)")
    posed_holdout: str = _f("cup-table", "mixed: comma-separated posed scene names never trained on")
    posed_fine: bool = _f(True, "mixed: posed pairs also train the fine stage (tracks near cell centres, epipolar "
                                "lines elsewhere)")
    extreme_share: float = _f(0.0, "photos/mixed: share of the homographic training pairs that are extreme views (a "
                                   "camera tilted up to 75°, zoom 1/4-4x, roll within --extreme-rotation; validation "
                                   "pairs stay mild)")
    extreme_rotation: float = _f(45.0, "photos/mixed: largest in-plane rotation (degrees) of the extreme views; "
                                       "matching at any rotation is Matcher(rotations=4) / --rotations")
    hard_light: float = _f(0.0, "photos/mixed: share of the homographic and posed training pairs in which one view "
                                "is strongly relit (the light moved, or night: loftr.train.appearance.relight)")
    extreme_light: bool = _f(True, "photos/mixed: --hard-light also relights the extreme views (--no-extreme-light: "
                                   "they keep only the mild photometric change, the relighting goes to the others)")
    posed_max_zoom: float = _f(1.8, "mixed: largest extra zoom of a posed crop beyond covering the network size "
                                    "(each view draws its own, so the scale between the views reaches this too)")
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
    minutes: float = _f(0.0, "stop (with a checkpoint and a validation) after this many minutes of this process; 0: no limit")
    fine_only: bool = _f(False, "train only the fine stage (the FPN merges below 1/8, the window pre-processing, the "
                                "fine transformer); the rest stays as --init gave it (BatchNorm statistics too), so "
                                "the coarse matches do not change")
    freeze_backbone: bool = _f(False, "the ResNet-FPN stays as --init gave it (BatchNorm statistics too): only the "
                                      "coarse transformer and the fine stage learn, so the local features do not move")
    freeze_bn: bool = _f(False, "BatchNorm statistics held at those of --init (eval-mode BatchNorm, its affine still "
                                "learns): fine-tuning in small batches of another data mix would otherwise move them")
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
        shares = (self.scene_share, self.teacher_share, self.posed_share)
        if not (all(0.0 <= v <= 1.0 for v in shares) and sum(shares) <= 1.0 + 1e-9):
            raise ValueError(f"scene_share, teacher_share and posed_share must be in [0, 1] with a sum of at most 1, "
                             f"got {self.scene_share}, {self.teacher_share} and {self.posed_share}")
        if self.teacher and self.dataset != "mixed":
            raise ValueError(f"a teacher cache trains with --dataset mixed, not {self.dataset}")
        if self.teacher_share > 0 and not self.teacher:
            raise ValueError("teacher_share needs a teacher cache (--teacher)")
        if self.posed and self.dataset != "mixed":
            raise ValueError(f"posed scenes train with --dataset mixed, not {self.dataset}")
        if self.posed_teacher and not self.posed:
            raise ValueError("posed_teacher needs posed training scenes (--posed)")
        if self.posed_share > 0 and not self.posed:
            raise ValueError("posed_share needs posed training scenes (--posed)")
        if not 0.0 <= self.extreme_share <= 1.0 or not 0.0 <= self.extreme_rotation <= 180.0:
            raise ValueError(f"extreme_share must be in [0, 1] and extreme_rotation in [0, 180] degrees, got "
                             f"{self.extreme_share} and {self.extreme_rotation}")
        if not 0.0 <= self.hard_light <= 1.0 or self.posed_max_zoom < 1.0:
            raise ValueError(f"hard_light must be in [0, 1] and posed_max_zoom at least 1, got {self.hard_light} and "
                             f"{self.posed_max_zoom}")
        no_photo_pairs = self.dataset not in ("photos", "mixed") or (self.dataset == "mixed" and sum(shares) > 1 - 1e-9)
        if self.extreme_share > 0 and no_photo_pairs:
            raise ValueError("extreme_share applies to homographic photo pairs: --dataset photos, or mixed with "
                             "a share left for them")
        if self.freeze_bn and not self.init:
            raise ValueError("freeze_bn holds the BatchNorm statistics of given weights: it needs --init")
        if self.fine_only and not self.init:
            raise ValueError("fine_only trains the fine stage of given weights: it needs --init")
        if self.freeze_backbone and not self.init:
            raise ValueError("freeze_backbone keeps the backbone of given weights: it needs --init")
        if self.freeze_backbone and self.fine_only:
            raise ValueError("freeze_backbone and fine_only exclude each other (fine_only freezes more)")
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
