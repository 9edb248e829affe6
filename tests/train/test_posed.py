"""Posed training pairs: a planar synthetic scene with two known cameras, written in the posed_train format, checks
the loader, the crops and the geometric supervision (track positives, epipolar negatives, unknowns); the real shared
scenes load when ../shared is there."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from loftr.train.posed import PosedPairs, PosedScene, collate_posed, fundamental, scene_folders
from loftr.train.supervision import FAR, epipolar_lines, grid_points, line_distance, posed_coarse_supervision

from .scenes import grey_texture

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
K = np.array([[260.0, 0.0, 159.5], [0.0, 260.0, 119.5], [0.0, 0.0, 1.0]])


def _camera(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World-to-camera (4, 4) of a camera at ``centre`` looking at ``target`` (world y down in the image)."""
    f = (target - centre) / np.linalg.norm(target - centre)
    r = np.cross(np.array([0.0, -1.0, 0.0]), f)
    r /= np.linalg.norm(r)
    R = np.stack([r, np.cross(f, r), f])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, -R @ centre
    return T


def _project(T: np.ndarray, X: np.ndarray) -> np.ndarray:
    x = (X @ T[:3, :3].T + T[:3, 3]) @ K.T
    return x[:, :2] / x[:, 2:]


def make_scene(root: Path, n_points: int = 400) -> Path:
    """A textured plane z = 0 (metres 0-2 by 0-2, texture 512 px) seen by two cameras from different sides; the
    tracks are random plane points seen by both, at the written image size 320x240."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    texture = (grey_texture("astronaut", 512) * 255).astype(np.uint8)
    cams = {"a.png": _camera(np.array([0.6, 0.7, -2.0]), np.array([1.0, 1.0, 0.0])),
            "b.png": _camera(np.array([1.7, 1.2, -1.8]), np.array([1.0, 1.0, 0.0]))}
    tex_to_plane = np.diag([2.0 / 512, 2.0 / 512, 1.0])  # texture pixel → plane metres (z = 0)
    rng = np.random.default_rng(0)
    X = np.c_[rng.uniform(0.1, 1.9, (n_points, 2)), np.zeros(n_points)]
    xy, image, point = [], [], []
    for k, (name, T) in enumerate(cams.items()):
        H = K @ np.c_[T[:3, 0], T[:3, 1], T[:3, 3]] @ tex_to_plane
        img = cv2.warpPerspective(texture, H, (320, 240), flags=cv2.INTER_LINEAR)
        cv2.imwrite(str(root / "images" / name), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
        p = _project(T, X)
        inside = (p[:, 0] > 0) & (p[:, 0] < 319) & (p[:, 1] > 0) & (p[:, 1] < 239)
        xy.append(p[inside]), image.append(np.full(inside.sum(), k)), point.append(np.flatnonzero(inside))
    cameras = {n: {"K": K.tolist(), "R": T[:3, :3].tolist(), "t": T[:3, 3].tolist()} for n, T in cams.items()}
    (root / "cameras.json").write_text(json.dumps(cameras))
    np.savez(root / "points.npz", xy=np.concatenate(xy).astype(np.float32),
             image=np.concatenate(image).astype(np.int32), point=np.concatenate(point).astype(np.int32),
             names=np.array(list(cams)), xyz=X.astype(np.float32), point_ids=np.arange(n_points, dtype=np.int32))
    shared = len(np.intersect1d(point[0], point[1]))
    (root / "pairs.txt").write_text(f"a.png b.png {shared} 0.3\n")
    return root


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return make_scene(tmp_path_factory.mktemp("posed") / "plane")


def test_scene_loads_tracks_of_both_images(scene: Path) -> None:
    s = PosedScene.load(scene)
    xy0, xy1 = s.shared("a.png", "b.png")
    assert len(xy0) == len(xy1) > 100
    (K0, T0), (K1, T1) = s.cameras["a.png"], s.cameras["b.png"]
    F = fundamental(K0, T0, K1, T1)
    line = np.c_[xy0, np.ones(len(xy0))] @ F.T
    d = np.abs((line[:, :2] * xy1).sum(1) + line[:, 2]) / np.hypot(line[:, 0], line[:, 1])
    assert d.max() < 0.01  # exact projections (float32 pixels)


def test_a_folder_without_tracks_is_refused(tmp_path: Path) -> None:
    (tmp_path / "fox").mkdir()
    (tmp_path / "fox" / "cameras.json").write_text("{}")
    with pytest.raises(ValueError, match="not a posed training scene: no points.npz, pairs.txt"):
        PosedScene.load(tmp_path / "fox")


def test_holdout_leaves_a_scene_out(tmp_path: Path) -> None:
    for name in ("cup-table", "desk"):
        (tmp_path / name).mkdir()
    assert [p.name for p in scene_folders(tmp_path)] == ["desk"]
    assert [p.name for p in scene_folders(tmp_path, ())] == ["cup-table", "desk"]
    with pytest.raises(ValueError, match="no posed training scenes"):
        scene_folders(tmp_path / "cup-table")


def _sample_epipolar(sample) -> np.ndarray:
    p0, p1, F = sample.kpts0.numpy(), sample.kpts1.numpy(), sample.F_0to1.numpy()
    line = np.c_[p0, np.ones(len(p0))] @ F.T
    return np.abs((line[:, :2] * p1).sum(1) + line[:, 2]) / np.hypot(line[:, 0], line[:, 1])


def _patch(img: torch.Tensor, p: np.ndarray, r: int = 4) -> np.ndarray | None:
    x, y = int(round(p[0])), int(round(p[1]))
    h, w = img.shape[-2:]
    if x < r or y < r or x >= w - r or y >= h - r:
        return None
    return img[0, y - r:y + r + 1, x - r:x + r + 1].numpy().ravel()


def test_crops_keep_tracks_on_the_same_scene_points_and_on_their_epipolar_lines(scene: Path) -> None:
    plain = PosedPairs([scene], (128, 96), length=8, seed=3, strength=0.0)
    changed = PosedPairs([scene], (128, 96), length=8, seed=3, strength=1.0)
    correlations = []
    for k in range(6):
        s, t = plain[k], changed[k]
        assert s.image0.shape == (1, 96, 128) and len(s.kpts0) >= 16
        assert torch.equal(s.kpts0, t.kpts0) and torch.equal(s.F_0to1, t.F_0to1)  # appearance only
        assert not torch.equal(s.image0, t.image0)
        assert _sample_epipolar(s).max() < 0.05  # crops and zooms carried into F exactly
        for p0, p1 in zip(s.kpts0.numpy(), s.kpts1.numpy()):
            a, b = _patch(s.image0, p0), _patch(s.image1, p1)
            if a is not None and b is not None and a.std() > 0.02 and b.std() > 0.02:
                correlations.append(np.corrcoef(a, b)[0, 1])
    assert len(correlations) > 50
    assert np.median(correlations) > 0.7  # the same texture around both observations (random pairs: ~0)


def _cell(p: np.ndarray, hw: tuple[int, int], stride: int = 8) -> int:
    c = np.round(p / stride).astype(int)
    return int(c[1] * hw[1] + c[0])


def test_tracks_are_positives_far_cells_negatives_and_near_ones_unknown(scene: Path) -> None:
    """Tracks placed exactly at cell centres of image0 (their true match in image1) give positives at the right
    cells with exact fine targets; a cell far from the epipolar line is negative, one on the line unknown."""
    s = PosedScene.load(scene)
    (K0, T0), (K1, T1) = s.cameras["a.png"], s.cameras["b.png"]
    F = fundamental(K0, T0, K1, T1)
    hw = (30, 40)  # the 320x240 images at stride 8
    plane = np.c_[T0[:3, 0], T0[:3, 1], T0[:3, 3]]  # image0 pixel → plane point (z = 0)
    cells = np.array([[8 * x, 8 * y] for x in range(10, 30, 4) for y in range(8, 24, 4)], np.float64)
    uv = np.c_[cells, np.ones(len(cells))] @ np.linalg.inv(K @ plane).T
    kpts1 = _project(T1, np.c_[uv[:, :2] / uv[:, 2:], np.zeros(len(cells))])
    assert (kpts1 > 4).all() and (kpts1 < [316, 236]).all()  # every true match inside image1
    kpts0, kpts1 = torch.from_numpy(cells)[None], torch.from_numpy(kpts1)[None]
    sup = posed_coarse_supervision(kpts0, kpts1, torch.ones(1, len(cells), dtype=torch.bool),
                                   torch.from_numpy(F)[None], hw, hw, 8)
    expected = {(_cell(p0, hw), _cell(p1, hw)) for p0, p1 in zip(cells, kpts1[0].numpy())}
    assert set(zip(sup.i_ids.tolist(), sup.j_ids.tolist())) == expected
    assert all(sup.conf_gt[0, i, j] == 1 for i, j in expected)
    for p0, p1 in zip(cells, kpts1[0].numpy()):  # exact fine targets at the cell centres
        assert np.allclose(sup.w_pt0_i[0, _cell(p0, hw)].numpy(), p1, atol=1e-6)
    assert int((sup.conf_gt == 1).sum()) == len(expected)
    # an untracked cell of image0 between the tracks: negative far from its epipolar line, unknown on it
    tracked0 = {i for i, _ in expected}
    tracked1 = {j for _, j in expected}
    i = _cell(np.array([8.0 * 12, 8.0 * 10]), hw)
    assert i not in tracked0
    pts = grid_points(hw, 8, 1, torch.device("cpu"))[0]
    d = line_distance(epipolar_lines(pts[i:i + 1], torch.from_numpy(F)), pts)[0]
    d_back = line_distance(epipolar_lines(pts, torch.from_numpy(F).T), pts[i:i + 1])[:, 0]
    dist = torch.maximum(d, d_back)
    far = int(torch.argmax(dist))
    near = [j for j in torch.argsort(dist).tolist() if j not in tracked1][0]
    assert dist[far] > 3 * 8 and sup.conf_gt[0, i, far] == 0
    assert dist[near] < 8 and sup.conf_gt[0, i, near] == -1
    assert int((sup.w_pt0_i[0, :, 0] < FAR).sum()) == len(expected)  # fine targets only where tracks are


def test_an_sfm_outlier_is_not_a_positive() -> None:
    F = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)  # rectified: y1 = y0
    kpts0 = torch.tensor([[[40.0, 40.0], [80.0, 40.0]]], dtype=torch.float64)
    kpts1 = torch.tensor([[[30.0, 40.5], [70.0, 100.0]]], dtype=torch.float64)  # the second one 60 px off its line
    sup = posed_coarse_supervision(kpts0, kpts1, torch.ones(1, 2, dtype=torch.bool), F[None], (16, 16), (16, 16), 8)
    assert sup.i_ids.tolist() == [5 * 16 + 5] and sup.j_ids.tolist() == [5 * 16 + 4]
    assert sup.conf_gt[0, 5 * 16 + 10].max() < 1


def test_a_posed_batch_trains_both_stages(scene: Path) -> None:
    from loftr.model import LoFTR
    from loftr.train.objective import loss_terms

    pairs = PosedPairs([scene], (128, 96), length=4, seed=0)
    torch.manual_seed(0)
    model = LoFTR("tiny_ds")
    measured = {}
    for fine in (True, False):
        batch = collate_posed([pairs[0], pairs[1]])
        batch = type(batch)(**{**batch.__dict__, "fine": fine})
        model.zero_grad(set_to_none=True)
        loss, logs = loss_terms(model, batch)
        loss.backward()
        assert torch.isfinite(loss) and logs[3] > 0  # ground-truth matches from the tracks
        fine_grad = sum(float(p.grad.abs().sum()) for p in model.loftr_fine.parameters() if p.grad is not None)
        coarse_grad = sum(float(p.grad.abs().sum()) for p in model.loftr_coarse.parameters() if p.grad is not None)
        measured[fine] = (float(logs[1]), float(logs[2]), fine_grad, coarse_grad)
    assert measured[True][1] > 0 and measured[True][2] > 0
    assert measured[False][1] == 0.0 and measured[False][2] == 0.0
    assert measured[True][0] > 0 and measured[True][3] > 0 and measured[False][3] > 0


def test_mixed_run_with_posed_pairs_through_the_trainer(photo_dir: Path, scene: Path, tmp_path: Path) -> None:
    from loftr.train.config import TrainConfig
    from loftr.train.mixed import MixedPairs
    from loftr.train.posed import PosedPairSample
    from loftr.train.sampling import build_datasets
    from loftr.train.trainer import train

    cfg = TrainConfig(images=str(photo_dir), out_dir=str(tmp_path / "run"), dataset="mixed", size=128, batch_size=1,
                      steps=2, warmup=1, checkpoint_every=2, validate_every=2, val_pairs=1, holdout=5, log_every=1,
                      scene_share=0.0, posed=str(scene.parent), posed_holdout="", posed_share=1.0)
    data, _, _ = build_datasets(cfg)
    assert isinstance(data, MixedPairs) and isinstance(data[0], PosedPairSample)
    state = torch.load(train(cfg), weights_only=True)
    assert state["step"] == 2
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    with pytest.raises(ValueError, match="posed_share needs"):
        TrainConfig(images="x", out_dir="y", dataset="mixed", posed_share=0.3)
    with pytest.raises(ValueError, match="posed scenes train with --dataset mixed"):
        TrainConfig(images="x", out_dir="y", dataset="photos", posed="p")
    with pytest.raises(ValueError, match="sum of at most 1"):
        TrainConfig(images="x", out_dir="y", dataset="mixed", posed="p", posed_share=0.6, scene_share=0.6)


def test_a_teachers_verified_matches_join_the_tracks_of_their_pair(scene: Path, tmp_path: Path) -> None:
    from loftr.train.teacher import TeacherCache

    plain = PosedScene.load(scene)
    xy0, xy1 = plain.shared("a.png", "b.png")
    (_, T0), (_, T1) = plain.cameras["a.png"], plain.cameras["b.png"]
    rng = np.random.default_rng(3)
    X = np.c_[rng.uniform(0.2, 1.8, (60, 2)), np.zeros(60)]  # other plane points: the teacher's matches
    t0, t1 = _project(T0, X), _project(T1, X)
    photos = tmp_path / "photos"
    photos.mkdir()
    # names relative to the photo folder, as `teacher-cache --relative-to` writes them; the pair stored as (b, a)
    b_rel, a_rel = (os.path.relpath(scene / "images" / n, photos) for n in ("b.png", "a.png"))
    names = [(b_rel, a_rel), ("elsewhere/x.png", "elsewhere/y.png")]  # and a pair of no posed scene
    cache = TeacherCache(names, np.full((2, 2, 2), 320), [t1, t1[:5]], [t0, t0[:5]], "test")
    taught = plain.with_teacher(cache, photos)
    s0, s1 = taught.shared("a.png", "b.png")
    assert len(s0) == len(xy0) + 60 and np.allclose(s0[len(xy0):], t0) and np.allclose(s1[len(xy1):], t1)
    r1, r0 = taught.shared("b.png", "a.png")
    assert np.allclose(r0, s0) and np.allclose(r1, s1)
    assert plain.shared("a.png", "b.png")[0].shape == xy0.shape  # the loaded scene is unchanged

    pairs = PosedPairs([scene], (160, 120), length=4, seed=0, teacher=cache.save(tmp_path / "t.npz"),
                       teacher_root=photos)
    assert pairs.scenes[0].extra and len(pairs[0].kpts0) >= 16
    with pytest.raises(ValueError, match="no pair of the teacher cache"):
        PosedPairs([scene], (160, 120), teacher=TeacherCache(names[1:], np.full((1, 2, 2), 320), [t1[:5]], [t0[:5]]),
                   teacher_root=photos)
    from loftr.train.config import TrainConfig

    with pytest.raises(ValueError, match="posed_teacher needs"):
        TrainConfig(images="x", out_dir="y", dataset="mixed", posed_teacher="t.npz")


@pytest.mark.skipif(not (SHARED / "posed_train").is_dir(), reason="needs ../shared/data/posed_train")
def test_the_shared_training_scenes_load_without_the_held_out_one() -> None:
    folders = scene_folders(SHARED / "posed_train")
    assert "cup-table" not in {f.name for f in folders} and len(folders) >= 2
    pairs = PosedPairs(folders, (384, 288), length=4, seed=0)
    sample = pairs[0]
    assert sample.image0.shape == (1, 288, 384) and len(sample.kpts0) > 0
    assert np.median(_sample_epipolar(sample)) < 2.0  # SfM tracks: about a pixel
    if (SHARED / "posed" / "fox").is_dir():
        with pytest.raises(ValueError, match="evaluation-only"):
            PosedPairs([SHARED / "posed" / "fox"])


def test_packed_scenes_keep_tracks_on_their_epipolar_lines(scene: Path, tmp_path: Path) -> None:
    """scripts/pack_posed.py shrinks the images for a device machine: K and the track observations follow them."""
    import importlib.util

    script = Path(__file__).parents[2] / "scripts" / "pack_posed.py"
    spec = importlib.util.spec_from_file_location("pack_posed", script)
    pack_posed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack_posed)
    factors = pack_posed.pack_scene(scene, tmp_path / "plane", longest=160)
    assert factors == {"a.png": (0.5, 0.5), "b.png": (0.5, 0.5)}
    packed = PosedScene.load(tmp_path / "plane")
    assert cv2.imread(str(tmp_path / "plane" / "images" / "a.png")).shape == (120, 160, 3)
    xy0, xy1 = packed.shared("a.png", "b.png")
    (K0, T0), (K1, T1) = packed.cameras["a.png"], packed.cameras["b.png"]
    F = fundamental(K0, T0, K1, T1)
    line = np.c_[xy0, np.ones(len(xy0))] @ F.T
    assert (np.abs((line[:, :2] * xy1).sum(1) + line[:, 2]) / np.hypot(line[:, 0], line[:, 1])).max() < 0.01
    original = PosedScene.load(scene).shared("a.png", "b.png")[0]
    assert np.allclose(xy0, (original + 0.5) / 2 - 0.5, atol=1e-4)
    # a teacher cache of the pair follows the images, renamed for the packed photo folder
    from loftr.train.teacher import TeacherCache

    photos, packed_photos = tmp_path / "photos", tmp_path / "packed_photos"
    b_rel, a_rel = (os.path.relpath(scene / "images" / n, photos) for n in ("b.png", "a.png"))
    t1, t0 = PosedScene.load(scene).shared("b.png", "a.png")
    cache = TeacherCache([(b_rel, a_rel), ("x/1.png", "x/2.png")], np.full((2, 2, 2), 320), [t1, t1[:3]],
                         [t0, t0[:3]])
    moved = pack_posed.pack_teacher(cache, photos, {scene: (tmp_path / "plane", factors)}, packed_photos)
    assert moved.names == [("../plane/images/b.png", "../plane/images/a.png")] and moved.sizes.tolist() == [
        [[160, 160], [160, 160]]]
    again = PosedScene.load(tmp_path / "plane").with_teacher(moved, packed_photos)
    assert np.allclose(again.shared("a.png", "b.png")[0][len(xy0):], xy0, atol=1e-4)  # the tracks, taught again

