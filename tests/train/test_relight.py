"""Strong illumination changes of one view (relight) in the homographic and posed training pairs, and the wider
posed zoom: geometry untouched, the rest of each pair drawn as without them, the options checked and recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from loftr.train.appearance import relight
from loftr.train.config import TrainConfig
from loftr.train.data import HomographyPairs
from loftr.train.export import data_summary
from loftr.train.posed import PosedPairs
from loftr.train.sampling import list_images

from .scenes import grey_texture
from .test_posed import make_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return make_scene(tmp_path_factory.mktemp("posed") / "plane")


def test_relight_changes_the_light_not_the_content() -> None:
    grey = grey_texture("astronaut", 128).astype(np.float32)
    local_changes = []
    for seed in range(12):
        out = relight(np.random.default_rng(seed), grey)
        assert out.shape == grey.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
        assert np.abs(out - grey).mean() > 0.03  # a strong change, not jitter
        # the content stays: edges where they were (gradient magnitudes correlate)
        gx, gy = np.gradient(grey), np.gradient(out)
        assert np.corrcoef(np.hypot(*gx).ravel(), np.hypot(*gy).ravel())[0, 1] > 0.3
        # not one global gain: the ratio of the two images varies across the view
        ratio = (out + 0.02) / (grey + 0.02)
        local_changes.append(np.std([ratio[:64, :64].mean(), ratio[:64, 64:].mean(),
                                     ratio[64:, :64].mean(), ratio[64:, 64:].mean()]))
    assert np.median(local_changes) > 0.05
    assert np.array_equal(relight(np.random.default_rng(3), grey), relight(np.random.default_rng(3), grey))


def test_homographic_pairs_relight_one_view_and_keep_everything_else(photo_dir: Path) -> None:
    images = list_images(photo_dir)
    plain = HomographyPairs(images, size=64, length=12, seed=4, extreme_share=0.5)
    lit = HomographyPairs(images, size=64, length=12, seed=4, extreme_share=0.5, hard_light=0.5)
    relit = 0
    for k in range(12):
        a, b = plain[k], lit[k]
        assert torch.equal(a.H_0to1, b.H_0to1) and torch.equal(a.valid1, b.valid1)  # the same geometry and views
        same = [torch.equal(a.image0, b.image0), torch.equal(a.image1, b.image1)]
        assert sum(same) >= 1  # at most one view relit
        relit += not all(same)
    assert 0 < relit < 12


def test_extreme_views_can_be_spared_the_relighting(photo_dir: Path) -> None:
    images = list_images(photo_dir)
    extreme = dict(size=64, length=6, seed=5, extreme_share=1.0)
    plain, spared = HomographyPairs(images, **extreme), HomographyPairs(images, **extreme, hard_light=1.0,
                                                                         extreme_light=False)
    lit = HomographyPairs(images, **extreme, hard_light=1.0)
    for k in range(6):  # every pair extreme: sparing them relights none, the default relights all
        assert torch.equal(plain[k].image0, spared[k].image0) and torch.equal(plain[k].image1, spared[k].image1)
        assert not (torch.equal(plain[k].image0, lit[k].image0) and torch.equal(plain[k].image1, lit[k].image1))
    mild = HomographyPairs(images, size=64, length=6, seed=5, hard_light=1.0, extreme_light=False)
    base = HomographyPairs(images, size=64, length=6, seed=5)
    for k in range(6):  # no extreme views: every pair still relit in one view
        assert torch.equal(base[k].image0, mild[k].image0) != torch.equal(base[k].image1, mild[k].image1)


def test_posed_pairs_relight_one_view_and_zoom_further(scene: Path) -> None:
    plain = PosedPairs([scene], (128, 96), length=8, seed=3)
    lit = PosedPairs([scene], (128, 96), length=8, seed=3, hard_light=1.0)
    for k in range(6):
        a, b = plain[k], lit[k]
        assert torch.equal(a.kpts0, b.kpts0) and torch.equal(a.F_0to1, b.F_0to1)
        assert torch.equal(a.image0, b.image0) != torch.equal(a.image1, b.image1)  # exactly one view relit
    near = PosedPairs([scene], (128, 96), length=8, seed=3, max_zoom=1.0)
    far = PosedPairs([scene], (128, 96), length=8, seed=3, max_zoom=4.0)
    spread = [np.ptp(near[k].kpts0.numpy(), 0).max() / max(np.ptp(far[k].kpts0.numpy(), 0).max(), 1e-6)
              for k in range(6)]
    assert np.median(spread) < 1.0  # zoomed-in crops see the tracks spread wider


def test_options_are_checked_and_recorded(photo_dir: Path, scene: Path, tmp_path: Path) -> None:
    base = {"images": str(photo_dir), "out_dir": str(tmp_path / "run"), "dataset": "mixed"}
    for bad in ({"hard_light": 1.5}, {"hard_light": -0.1}, {"posed_max_zoom": 0.5}):
        with pytest.raises(ValueError, match="hard_light must be in"):
            TrainConfig(**{**base, **bad})
    cfg = {**base, "posed": str(scene), "posed_share": 0.4, "posed_holdout": "", "hard_light": 0.5,
           "posed_max_zoom": 3.0}
    line = data_summary(cfg)
    assert "zoom to 3" in line and "one view relit in 0.5" in line
    assert "relit" not in data_summary({**cfg, "hard_light": 0.0}) and "zoom" not in data_summary(
        {**cfg, "posed_max_zoom": 1.8})
    assert "(not the extreme views)" in data_summary({**cfg, "extreme_share": 0.4, "extreme_light": False})
    assert "not the extreme" not in data_summary({**cfg, "extreme_share": 0.4})


def test_another_sensor_flips_some_edges_and_keeps_the_structure() -> None:
    from loftr.train.appearance import _other_sensor

    grey = grey_texture("camera", 128).astype(np.float32)
    flipped = []
    for seed in range(8):
        out = np.clip(_other_sensor(np.random.default_rng(seed), grey), 0, 1)
        gx0, gx1 = np.gradient(grey)[1], np.gradient(out)[1]
        strong = np.abs(gx0) > np.percentile(np.abs(gx0), 90)
        agree = np.sign(gx0[strong]) == np.sign(gx1[strong])
        flipped.append(1 - agree.mean())
        assert np.corrcoef(np.abs(gx0).ravel(), np.abs(gx1).ravel())[0, 1] > 0.2  # edges stay where they were
    assert max(flipped) > 0.3 and min(flipped) < 0.7  # not a plain inversion, nor a plain gain
