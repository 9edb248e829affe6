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


class StandInLightGlue:
    """LightGlue as both LightGlue packages expose it, matching keypoints (0, 2) and (2, 1) with scores 0.2 and 0.7."""

    features = ""

    def __init__(self, features: str) -> None:
        assert features == self.features

    def eval(self):
        return self

    def to(self, device):
        return self

    def __call__(self, data: dict) -> dict:
        return {"matches": [torch.tensor([[0, 2], [2, 1]])], "scores": [torch.tensor([0.2, 0.7])]}


def install_stand_in(monkeypatch, module: str, features: str, extractor_name: str, extractor: type) -> None:
    """Put a stand-in package ``module`` (its extractor class and a LightGlue for ``features``) in sys.modules."""
    import importlib.machinery
    import sys
    import types

    fake = types.ModuleType(module)
    setattr(fake, extractor_name, extractor)
    fake.LightGlue = type("LightGlue", (StandInLightGlue,), {"features": features})
    fake.__spec__ = importlib.machinery.ModuleSpec(module, None)
    monkeypatch.setitem(sys.modules, module, fake)
