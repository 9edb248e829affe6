from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from .scenes import grey_texture


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    """Five small textured photos (scikit-image's bundled images), so training tests need no shared data."""
    folder = tmp_path_factory.mktemp("photos")
    for name in ("camera", "astronaut", "coffee", "chelsea", "brick"):
        cv2.imwrite(str(folder / f"{name}.png"), (grey_texture(name, 128) * 255).round().astype(np.uint8))
    return folder


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny training steps run fastest on one thread (and several busy OpenMP threads on a loaded machine run far
    slower); restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
