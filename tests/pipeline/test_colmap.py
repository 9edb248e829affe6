from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("h5py")
pycolmap = pytest.importorskip("pycolmap")

from loftr import Matcher  # noqa: E402
from loftr.cli import main  # noqa: E402
from loftr.pipeline.colmap import create_database  # noqa: E402
from loftr.pipeline.pairs import list_images, sequential_pairs  # noqa: E402

from ..conftest import PHOTOS  # noqa: E402

# upright frames of the deep-image-matching Cyprus walk-around (DSC_6468 and DSC_6471 are rotated on purpose)
CYPRUS = [f"deep-image-m__assets_example_cyprus_images_DSC_{i}.JPG" for i in (6469, 6470, 6472, 6473, 6474, 6475)]


@pytest.fixture(scope="module")
def cyprus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cyprus")
    for name in CYPRUS:
        if not (PHOTOS / name).exists():
            pytest.skip(f"shared photo {name} not available")
        shutil.copy(PHOTOS / name, folder / name.split("images_")[-1])
    return folder


def test_sfm_reconstructs_a_real_sequence_with_the_bundled_model(cyprus: Path, tmp_path: Path, capsys) -> None:
    start = time.perf_counter()
    rc = main(["sfm", str(cyprus), "--sequential", "2", "--out", str(tmp_path / "sfm"), "--max-size", "320",
               "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    rec = pycolmap.Reconstruction(tmp_path / "sfm" / "sparse" / out.split("sparse/")[-1].strip())
    assert rec.num_reg_images() >= 3, out
    assert rec.num_points3D() >= 30
    assert rec.compute_mean_reprojection_error() < 6.0  # original pixels; one 320-px matching pixel is 4.7 of them
    assert f"registered {rec.num_reg_images()}/6 images" in out
    assert time.perf_counter() - start < 60


def test_database_holds_keypoints_and_matches_of_the_file(cyprus: Path, tmp_path: Path) -> None:
    from loftr.pipeline.batch import match_pairs
    from loftr.pipeline.h5 import read_matches

    names = list_images(cyprus)[:3]
    pairs = sequential_pairs(names, 2)
    matches = match_pairs(Matcher(max_size=160), cyprus, pairs, tmp_path / "m.h5").out
    ids = create_database(tmp_path / "db.db", cyprus, matches, pairs, camera_mode="single")
    db = pycolmap.Database.open(tmp_path / "db.db")
    try:
        assert db.num_images() == 3 and db.num_cameras() == 1
        cam = db.read_all_cameras()[0]
        assert (cam.width, cam.height) == (1500, 1000)
        for a, b in pairs:
            k0, k1, _ = read_matches(matches, a, b)
            m = db.read_matches(ids[a], ids[b])
            kp0, kp1 = db.read_keypoints(ids[a]), db.read_keypoints(ids[b])
            assert len(m) == len(k0) > 0
            np.testing.assert_allclose(kp0[m[:, 0], :2] - 0.5, k0, atol=1e-4)  # COLMAP: pixel centres at +0.5
            np.testing.assert_allclose(kp1[m[:, 1], :2] - 0.5, k1, atol=1e-4)
    finally:
        db.close()
