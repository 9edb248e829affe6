from __future__ import annotations

from pathlib import Path

import pytest
import torch

from loftr import LoFTR
from loftr.weights import save_safetensors

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny_ds checkpoint with random weights (fast; it matches little, and that is fine here)."""
    torch.manual_seed(0)
    return save_safetensors(LoFTR("tiny_ds"), tmp_path_factory.mktemp("weights") / "tiny.safetensors",
                            preset="tiny_ds")


@pytest.fixture(scope="session")
def tiny_loftr(tiny_weights: Path):
    """The random tiny LoFTR as a benchmark matcher at 160 px."""
    from loftr.eval.baselines import LoFTRMatcher
    from loftr.matcher import Matcher

    return LoFTRMatcher(Matcher(weights=tiny_weights, max_size=160, threshold=0.0), "LoFTR (random)")
