from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PHOTOS = SHARED / "data" / "photos"
WXBS = SHARED / "data" / "wxbs"


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory) -> Path:
    """A safetensors file of a randomly initialised tiny_ds (seed 0), tagged with its preset."""
    from loftr import LoFTR
    from loftr.weights import save_safetensors

    torch.manual_seed(0)
    return save_safetensors(LoFTR("tiny_ds"), tmp_path_factory.mktemp("w") / "tiny.safetensors", preset="tiny_ds")


def photo(name: str) -> Path:
    path = PHOTOS / name
    if not path.exists():
        pytest.skip(f"shared photo {name} not available")
    return path


@pytest.fixture
def sacre_coeur_pair() -> tuple[Path, Path]:
    return photo("LightGlue__assets_sacre_coeur1.jpg"), photo("LightGlue__assets_sacre_coeur2.jpg")


def load_grey(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """(1, 1, H, W) float in [0, 1], resized to size = (W, H)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return torch.from_numpy(img.astype(np.float32) / 255.0)[None, None]


def match_agreement(ref: dict, other: dict) -> float:
    """Matches (kornia-style dicts) with the same keypoint0 and keypoint1 within 1 px, over the larger set."""
    k0 = {tuple(p): q for p, q in zip(ref["keypoints0"].round().int().tolist(), ref["keypoints1"])}
    common = sum(1 for p, q in zip(other["keypoints0"].round().int().tolist(), other["keypoints1"])
                 if tuple(p) in k0 and float((k0[tuple(p)] - q).norm()) <= 1.0)
    return common / max(len(ref["keypoints0"]), len(other["keypoints0"]), 1)


TUM0 = "deep-image-m__src_deep_image_matching_thirdparty_ALIKED_assets_tum_1311868169.163498.png"
TUM1 = "deep-image-m__src_deep_image_matching_thirdparty_ALIKED_assets_tum_1311868169.263274.png"


def randomize(model: torch.nn.Module, seed: int = 0, calib: torch.Tensor | None = None) -> torch.nn.Module:
    """Random weights with random BatchNorm statistics and affines, in eval mode.

    Default initialisation gives every token nearly the same feature (a large common mean), which leaves a handful
    of mutual nearest neighbours; so the BatchNorm statistics are first measured on a real photo (a single
    train-mode pass), then perturbed at random, and the BatchNorm/LayerNorm affines are drawn at random. Every draw
    comes from ``seed``, biases included: the same seed gives the same weights in every process.
    ``calib`` (1, 1, H, W) replaces that photo (a test that must run without ../shared).
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for m in model.modules():
        for p in m.parameters(recurse=False):
            if p.dim() > 1:
                torch.nn.init.kaiming_normal_(p) if isinstance(m, torch.nn.Conv2d) else torch.nn.init.xavier_uniform_(p)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    calib = load_grey(photo("RoMa__assets_toronto_A.jpg"), (320, 240)) if calib is None else calib
    for m in bns:
        m.momentum = None
        m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model.backbone(calib)
        for m in bns:
            m.momentum = 0.1
            m.running_mean.add_(torch.randn(m.running_mean.shape, generator=g) * 0.1 * m.running_var.sqrt())
            m.running_var.mul_(torch.rand(m.running_var.shape, generator=g) * 0.4 + 0.8)
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for m in model.modules():  # other biases, as torch draws them but from ``g``: the same in every process
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and m.bias is not None:
                m.bias.copy_((torch.rand(m.bias.shape, generator=g) * 2 - 1) / m.weight[0].numel() ** 0.5)
    return model.eval()
