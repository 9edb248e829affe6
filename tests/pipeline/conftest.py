from __future__ import annotations

from pathlib import Path

import pytest
import torch

from loftr import LoFTR
from loftr.weights import save_safetensors

from ..conftest import PHOTOS, randomize

TUM = [f"deep-image-m__src_deep_image_matching_thirdparty_ALIKED_assets_tum_13118681{t}.png"
       for t in ("69.163498", "69.263274", "69.363470", "69.463229")]
KITTI = [f"deep-image-m__src_deep_image_matching_thirdparty_ALIKED_assets_kitti_0001{i:02d}.png" for i in (0, 1, 2)]


def small_copies(names: list[str], folder: Path, side: int = 160) -> Path:
    """Copies of shared photos shrunk to at most ``side`` px, named by their last part (tum_*.png, kitti_*.png)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = PHOTOS / name
        if not src.exists():
            pytest.skip(f"shared photo {name} not available")
        with Image.open(src) as img:
            img.thumbnail((side, side))
            img.save(folder / name.split("assets_")[-1])
    return folder


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """Random tiny_ds weights (with photo-calibrated BatchNorm statistics, see ``randomize``) in a safetensors file."""
    torch.manual_seed(0)
    model = randomize(LoFTR("tiny_ds"))
    return save_safetensors(model, tmp_path_factory.mktemp("w") / "tiny.safetensors", preset="tiny_ds")


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> Path:
    """A folder of 7 small images of two sizes: 4 TUM frames (160x120) and 3 KITTI frames (160x48)."""
    return small_copies(TUM + KITTI, tmp_path_factory.mktemp("images"))


def h5_contents(path: Path) -> tuple[dict, dict]:
    """Every dataset (by path) and the root attrs of an HDF5 file."""
    import h5py

    data: dict = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: data.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        attrs = dict(f.attrs)
    return data, attrs


def assert_same_h5(a: Path, b: Path) -> None:
    """Same datasets and root attrs; integers identical, floats equal up to float32 rounding (runs in other
    processes may use other thread counts, which changes summation order)."""
    import numpy as np

    da, aa = h5_contents(a)
    db, ab = h5_contents(b)
    assert sorted(da) == sorted(db)
    assert aa == ab
    for key in da:
        assert da[key].dtype == db[key].dtype, key
        if np.issubdtype(da[key].dtype, np.floating):
            assert np.allclose(da[key], db[key], rtol=1e-4, atol=1e-6), key
        else:
            assert np.array_equal(da[key], db[key]), key


MATCH_ARGS = ["--exhaustive", "--max-size", "150", "--threshold", "0", "--batch-size", "2", "--no-progress"]


@pytest.fixture(scope="session")
def clean_run(images: Path, tiny_weights: Path, tmp_path_factory) -> Path:
    """A single-process ``loftr match-pairs`` of the 21 pairs of ``images`` (2 decoding workers)."""
    pytest.importorskip("h5py")
    from loftr.cli import main

    out = tmp_path_factory.mktemp("clean") / "clean.h5"
    assert main(["match-pairs", str(images), "--out", str(out), "--weights", str(tiny_weights), "--workers", "2",
                 *MATCH_ARGS]) == 0
    return out
