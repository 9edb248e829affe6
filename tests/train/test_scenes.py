"""Synthetic 3D training scenes: camera conventions, exact depth, determinism, and ground truth that the depth
supervision turns into many matches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from loftr.train.scenes import KINDS, Camera, Quad, ScenePairs, box, cast, covisible_share, look_at
from loftr.train.supervision import depth_coarse_supervision

SIZE = (96, 72)


def _camera(eye, target, roll=0.0, f=80.0) -> Camera:
    R, t = look_at(np.asarray(eye, float), np.asarray(target, float), roll)
    K = np.array([[f, 0, (SIZE[0] - 1) / 2], [0, f, (SIZE[1] - 1) / 2], [0, 0, 1.0]])
    return Camera(K, R, t)


@pytest.mark.parametrize("roll", [0.0, 0.7, -2.0])
def test_look_at_centres_the_target_with_z_up_pointing_up_in_the_image(roll: float) -> None:
    cam = _camera([1.0, -2.0, 1.5], [0.3, 0.4, 0.2], roll)
    assert np.allclose(cam.R @ cam.R.T, np.eye(3)) and np.isclose(np.linalg.det(cam.R), 1.0)
    x = cam.K @ (cam.R @ np.array([0.3, 0.4, 0.2]) + cam.t)
    assert np.allclose(x[:2] / x[2], cam.K[:2, 2])
    if roll == 0.0:  # a point above the target appears higher in the image (smaller y)
        above = cam.K @ (cam.R @ np.array([0.3, 0.4, 0.7]) + cam.t)
        assert above[1] / above[2] < cam.K[1, 2]
    assert np.allclose(cam.centre, [1.0, -2.0, 1.5])


def test_cast_gives_exact_depth_of_a_fronto_parallel_plane_and_nothing_elsewhere() -> None:
    cam = _camera([0, 0, 3.0], [0, 0, 0])  # looking straight down at z = 0 from 3 m
    quad = Quad(np.array([-1.0, -1.0, 0.0]), np.array([2.0, 0, 0]), np.array([0, 2.0, 0]), 0, 1.0)
    depth, index, a, b = cast([quad], cam, SIZE)
    hit = index == 0
    assert hit.any() and (~hit).any()  # the 2 m square covers part of the 96x72 view
    assert np.allclose(depth[hit], 3.0) and np.isinf(depth[~hit]).all()
    assert ((a[hit] >= 0) & (a[hit] <= 1) & (b[hit] >= 0) & (b[hit] <= 1)).all()


def test_box_faces_point_outwards_and_occlude_what_is_behind() -> None:
    faces = box(np.zeros(3), np.array([1.0, 2.0, 3.0]), 0.4, [0], [1.0], [1.0], bottom=True)
    assert len(faces) == 6
    for q in faces:
        centre = q.origin + (q.e1 + q.e2) / 2
        assert centre @ q.normal > 0  # the normal points away from the box centre
    wall = Quad(np.array([-5.0, 4.0, -5.0]), np.array([10.0, 0, 0]), np.array([0, 0, 10.0]), 0, 1.0)
    cam = _camera([0, -6.0, 0.0], [0, 0, 0])
    depth, index, _, _ = cast([wall, *faces], cam, SIZE)
    centre = index[SIZE[1] // 2, SIZE[0] // 2]
    assert centre >= 1 and depth[SIZE[1] // 2, SIZE[0] // 2] < 10  # the box, not the wall behind it


def test_points_seen_in_both_views_land_on_the_same_surface_point(photo_dir: Path) -> None:
    """Reproject view 0 into view 1 with its depth and the relative pose: where not occluded, view 1's ray hits the same
    quad at the same surface coordinates (the geometry the supervision relies on)."""
    data = ScenePairs(sorted(photo_dir.iterdir()), SIZE, length=4, seed=1, photometric_aug=False)
    for attempt in range(20):  # the first draw whose views overlap well
        scene, _, _ = data.scene(0, attempt)
        cam0, cam1 = scene.cameras
        d0, i0, a0, b0 = cast(scene.quads, cam0, SIZE)
        d1, i1, a1, b1 = cast(scene.quads, cam1, SIZE)
        if covisible_share(np.where(np.isfinite(d0), d0, 0), np.where(np.isfinite(d1), d1, 0), cam0, cam1) > 0.4:
            break
    ys, xs = np.nonzero(np.isfinite(d0))
    pts = np.stack([xs * d0[ys, xs], ys * d0[ys, xs], d0[ys, xs]], -1) @ np.linalg.inv(cam0.K).T
    T = cam1.w2c() @ np.linalg.inv(cam0.w2c())
    p1 = pts @ T[:3, :3].T + T[:3, 3]
    uv = p1 @ cam1.K.T
    u, v = uv[:, 0] / uv[:, 2], uv[:, 1] / uv[:, 2]
    ui, vi = np.round(u).astype(int), np.round(v).astype(int)
    inside = (p1[:, 2] > 0) & (ui >= 0) & (ui < SIZE[0]) & (vi >= 0) & (vi < SIZE[1])
    ui, vi, sel = ui[inside], vi[inside], np.flatnonzero(inside)
    seen = np.abs(d1[vi, ui] - p1[sel, 2]) < 0.01 * p1[sel, 2]
    assert seen.sum() > 100
    src, dst = (ys[sel[seen]], xs[sel[seen]]), (vi[seen], ui[seen])
    assert (i0[src] == i1[dst]).mean() > 0.97  # rounding to the pixel may cross an edge
    same = i0[src] == i1[dst]
    # surface coordinates agree up to the rounding of the projection to a pixel
    assert np.median(np.abs(a0[src][same] - a1[dst][same]) + np.abs(b0[src][same] - b1[dst][same])) < 0.05


def test_pairs_are_deterministic_valid_and_supervise_many_matches(photo_dir: Path) -> None:
    data = ScenePairs(sorted(photo_dir.iterdir()), SIZE, length=8, seed=0)
    kinds = set()
    for k in range(6):
        s = data[k]
        assert s.image0.shape == (1, SIZE[1], SIZE[0]) and s.depth0.shape == (SIZE[1], SIZE[0])
        assert torch.isfinite(s.image0).all() and 0 <= float(s.image0.min()) and float(s.image1.max()) <= 1
        assert (s.depth0 >= 0).all() and (s.depth0 > 0).float().mean() > 0.3
        assert torch.allclose(s.T_0to1[:3, :3] @ s.T_0to1[:3, :3].T, torch.eye(3, dtype=torch.float64), atol=1e-9)
        kinds.add(data.scene(k)[2])
        batch = ScenePairs.collate([s])
        sup = depth_coarse_supervision(batch.depth0, batch.depth1, batch.K0, batch.K1, batch.T_0to1,
                                       (SIZE[1] // 8, SIZE[0] // 8), (SIZE[1] // 8, SIZE[0] // 8), 8)
        assert sup.b_ids.numel() >= 5  # every drawn pair overlaps
    again = data[3]
    assert torch.equal(again.image0, data[3].image0) and torch.equal(again.depth1, data[3].depth1)
    assert not torch.equal(data[4].image0, data[5].image0)
    assert kinds <= set(KINDS)


def test_covisible_share_of_identical_views_is_one_and_of_opposite_views_zero() -> None:
    quad = Quad(np.array([-1.0, -1.0, 0.0]), np.array([2.0, 0, 0]), np.array([0, 2.0, 0]), 0, 1.0)
    cam = _camera([0, 0, 1.0], [0, 0, 0])
    depth = np.where(np.isfinite(d := cast([quad], cam, SIZE)[0]), d, 0.0)
    assert covisible_share(depth, depth, cam, cam) == pytest.approx(1.0)
    away = _camera([0, 0, 1.0], [0, 0, 2.0])  # looks up, away from the plane
    depth_away = np.where(np.isfinite(d := cast([quad], away, SIZE)[0]), d, 0.0)
    assert covisible_share(depth, depth_away, cam, away) == 0.0


def test_scenes_dataset_trains_through_the_trainer(photo_dir: Path, tmp_path: Path) -> None:
    from loftr.train.config import TrainConfig
    from loftr.train.trainer import train

    cfg = TrainConfig(images=str(photo_dir), out_dir=str(tmp_path / "run"), dataset="scenes", size=128, batch_size=1,
                      steps=2, warmup=1, checkpoint_every=1, validate_every=2, val_pairs=1, holdout=5,
                      log_every=1)
    last = train(cfg)
    state = torch.load(last, weights_only=True)
    assert state["step"] == 2
    log = (tmp_path / "run" / "log.jsonl").read_text()
    assert '"val"' in log and "with_ground_truth" in log


def test_minutes_budget_stops_with_a_checkpoint_and_a_validation(photo_dir: Path, tmp_path: Path) -> None:
    from loftr.train.config import TrainConfig
    from loftr.train.trainer import train

    cfg = TrainConfig(images=str(photo_dir), out_dir=str(tmp_path / "run"), dataset="scenes", size=128, batch_size=1,
                      steps=50, warmup=1, checkpoint_every=40, validate_every=40, val_pairs=1, holdout=5,
                      minutes=1e-6)
    state = torch.load(train(cfg), weights_only=True)
    assert state["step"] == 1  # the budget was spent after the first step
    assert (tmp_path / "run" / "step000001.pt").is_file() and '"val"' in (tmp_path / "run" / "log.jsonl").read_text()
