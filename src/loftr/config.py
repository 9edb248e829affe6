"""Frozen configuration of a LoFTR model, and the named presets.

The presets reproduce the official LoFTR configurations (``src/config/default.py`` plus the
``configs/loftr/{indoor,outdoor}`` overrides of the reference repository). Override a field with
:func:`dataclasses.replace` or :func:`with_overrides`; nothing here is ever mutated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

Attention = Literal["linear", "full"]
MatchType = Literal["dual_softmax", "sinkhorn"]


@dataclass(frozen=True)
class BackboneConfig:
    """ResNet-FPN. ``resolution`` (8, 2) uses 3 block dims, (16, 4) uses 4."""

    resolution: tuple[int, int] = (8, 2)
    initial_dim: int = 128
    block_dims: tuple[int, ...] = (128, 196, 256)

    def __post_init__(self) -> None:
        expected = {(8, 2): 3, (16, 4): 4}
        if self.resolution not in expected:
            raise ValueError(f"resolution must be (8, 2) or (16, 4), got {self.resolution}")
        if len(self.block_dims) != expected[self.resolution]:
            raise ValueError(
                f"resolution {self.resolution} needs {expected[self.resolution]} block dims, got {self.block_dims}"
            )


@dataclass(frozen=True)
class TransformerConfig:
    """Interleaved self/cross attention layers."""

    d_model: int = 256
    nhead: int = 8
    layer_names: tuple[str, ...] = ("self", "cross") * 4
    attention: Attention = "linear"

    def __post_init__(self) -> None:
        if self.d_model % self.nhead:
            raise ValueError(f"d_model {self.d_model} is not divisible by nhead {self.nhead}")
        bad = [n for n in self.layer_names if n not in ("self", "cross")]
        if bad:
            raise ValueError(f"layer names must be 'self' or 'cross', got {bad}")
        if self.attention not in ("linear", "full"):
            raise ValueError(f"attention must be 'linear' or 'full', got {self.attention!r}")


@dataclass(frozen=True)
class CoarseMatchingConfig:
    """Differentiable matching layer and the selection of coarse matches."""

    thr: float = 0.2
    border_rm: int = 2
    match_type: MatchType = "dual_softmax"
    dsmax_temperature: float = 0.1
    skh_iters: int = 3
    skh_init_bin_score: float = 1.0
    skh_prefilter: bool = False
    train_coarse_percent: float = 0.2
    train_pad_num_gt_min: int = 200

    def __post_init__(self) -> None:
        if self.match_type not in ("dual_softmax", "sinkhorn"):
            raise ValueError(f"match_type must be 'dual_softmax' or 'sinkhorn', got {self.match_type!r}")


@dataclass(frozen=True)
class LoFTRConfig:
    """A whole LoFTR model. ``temp_bug_fix`` selects the sine encoding (False: the released ds/ot weights).

    ``fine_max_std``: drop the matches whose fine heat map is spread wider than this (the summed std of x and y in
    window units, which the fine stage outputs with each offset: 0 for a peak on one cell, 1.41 for a flat map, 2
    for two peaks in opposite corners); None keeps every match, as the reference does. A weights file may carry its
    own value (metadata ``fine_max_std``, set by :func:`loftr.weights.load_weights`).
    """

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    coarse: TransformerConfig = field(default_factory=TransformerConfig)
    temp_bug_fix: bool = True
    match_coarse: CoarseMatchingConfig = field(default_factory=CoarseMatchingConfig)
    fine_window_size: int = 5
    fine_concat_coarse_feat: bool = True
    fine_max_std: float | None = None
    fine: TransformerConfig = field(
        default_factory=lambda: TransformerConfig(d_model=128, nhead=8, layer_names=("self", "cross"))
    )

    def __post_init__(self) -> None:
        if self.fine_window_size % 2 != 1:
            raise ValueError(f"fine_window_size must be odd, got {self.fine_window_size}")
        if self.fine_max_std is not None and not self.fine_max_std > 0:
            raise ValueError(f"fine_max_std must be positive or None, got {self.fine_max_std}")
        if self.coarse.d_model != self.backbone.block_dims[-1]:
            raise ValueError(
                f"coarse d_model {self.coarse.d_model} must equal the last block dim {self.backbone.block_dims[-1]}"
            )
        fine_dim = self.backbone.block_dims[0] if self.backbone.resolution == (8, 2) else self.backbone.block_dims[1]
        if self.fine.d_model != fine_dim:
            raise ValueError(f"fine d_model {self.fine.d_model} must equal the fine feature dim {fine_dim}")

    @property
    def resolution(self) -> tuple[int, int]:
        return self.backbone.resolution


def _official(*, temp_bug_fix: bool, match_type: MatchType, train_coarse_percent: float) -> LoFTRConfig:
    return LoFTRConfig(
        temp_bug_fix=temp_bug_fix,
        match_coarse=CoarseMatchingConfig(match_type=match_type, train_coarse_percent=train_coarse_percent),
    )


PRESETS: dict[str, LoFTRConfig] = {
    # released checkpoints (buggy positional encoding unless said otherwise)
    "outdoor_ds": _official(temp_bug_fix=False, match_type="dual_softmax", train_coarse_percent=0.3),
    "outdoor_ot": _official(temp_bug_fix=False, match_type="sinkhorn", train_coarse_percent=0.3),
    "indoor_ds": _official(temp_bug_fix=False, match_type="dual_softmax", train_coarse_percent=0.2),
    "indoor_ot": _official(temp_bug_fix=False, match_type="sinkhorn", train_coarse_percent=0.2),
    "indoor_ds_new": _official(temp_bug_fix=True, match_type="dual_softmax", train_coarse_percent=0.2),
    # ours: a small model trained here on homographic pairs and synthetic 3D scenes (see loftr.train), bundled
    "tiny_ds": LoFTRConfig(
        backbone=BackboneConfig(initial_dim=32, block_dims=(32, 64, 128)),
        coarse=TransformerConfig(d_model=128, nhead=8, layer_names=("self", "cross") * 2),
        temp_bug_fix=True,
        match_coarse=CoarseMatchingConfig(train_coarse_percent=0.3, train_pad_num_gt_min=32),
        fine=TransformerConfig(d_model=32, nhead=4, layer_names=("self", "cross")),
    ),
}


def get_preset(name: str) -> LoFTRConfig:
    """The preset called ``name``; an unknown name lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None


def with_overrides(config: LoFTRConfig, **match_coarse: object) -> LoFTRConfig:
    """A copy of ``config`` with coarse-matching fields replaced, e.g. ``with_overrides(cfg, thr=0.05)``."""
    return dataclasses.replace(config, match_coarse=dataclasses.replace(config.match_coarse, **match_coarse))
