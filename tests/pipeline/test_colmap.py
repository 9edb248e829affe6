"""The SfM pipeline on a rendered scene with exact poses (scene.py): what comes out must be the scene.

The matches fed to the pipeline are exact correspondences shaped like LoFTR's: image0's keypoints on the coarse
grid (every 8 network pixels) of a 2x-downscaled network input, shared by every pair the image starts, and image1's
at sub-pixel positions with 0.25 network pixels of noise. So everything after the matcher is tested — keypoint
merging, database, cameras, verification, mapping — independently of today's weights. The bundled model's SfM
quality on real frames is a benchmark (benchmarks/bench_sfm.py), not a test; one test here runs the whole `loftr
sfm` command on the rendered images with bounds loose enough that only a broken pipeline fails them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("h5py")
pycolmap = pytest.importorskip("pycolmap")

from loftr.cli import main  # noqa: E402
from loftr.pipeline.camera import make_camera  # noqa: E402
from loftr.pipeline.colmap import _shares_cameras, camera_groups, create_database, sfm_from_matches  # noqa: E402
from loftr.pipeline.h5 import DEFAULT_QUANTIZE, PairResult, read_matches, write_final  # noqa: E402
from loftr.pipeline.pairs import sequential_pairs  # noqa: E402

from . import scene as sc  # noqa: E402

SCALE = 0.5  # network input / original, as for a 1280-px frame matched at 640
STRIDE = 8  # LoFTR's coarse grid in network pixels


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, list[sc.Rect], dict[str, sc.View]]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("scene")
    rects, views = sc.scene(), sc.views()
    named = {}
    for i, v in enumerate(views):
        name = f"frame_{i:02d}.png"
        Image.fromarray(sc.render(rects, v)).save(folder / name)
        named[name] = v
    return folder, rects, named


def loftr_like_matches(rects, views: dict[str, sc.View], pairs, noise: float = 0.25,
                       seed: int = 0) -> dict[str, PairResult]:
    """Exact matches of each pair in LoFTR's shape (module doc), original pixels, most confident first."""
    rng = np.random.default_rng(seed)
    out = {}
    for a, b in pairs:
        v0, v1 = views[a], views[b]
        w, h = v0.size
        gy, gx = np.mgrid[0:int(h * SCALE):STRIDE, 0:int(w * SCALE):STRIDE]
        net0 = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float64)
        pix0 = (net0 + 0.5) / SCALE - 0.5  # loftr.io.to_original
        idx, pix1 = sc.correspondences(rects, v0, v1, pix0)
        pix1 = pix1 + rng.normal(0, noise / SCALE, pix1.shape)
        conf = rng.uniform(0.3, 1.0, len(idx))
        order = np.argsort(-conf)
        r = PairResult(a, b, pix0[idx][order].astype(np.float32), pix1[order].astype(np.float32),
                       conf[order].astype(np.float32), v0.size, v1.size, (SCALE, SCALE), (SCALE, SCALE))
        out[r.key] = r
    return out


def pose_errors(rec, views: dict[str, sc.View]) -> tuple[np.ndarray, np.ndarray]:
    """Per registered image: rotation error (degrees) and camera-centre error (scene units) after aligning the
    reconstruction to the truth by a similarity: the rotation that best maps the cameras' orientations (camera
    centres along an arc leave the rotation about it loose), then scale and shift fitted to the centres."""
    images = [rec.images[i] for i in rec.reg_image_ids()]
    R_est = [im.cam_from_world().rotation.matrix() for im in images]
    R_true = [views[im.name].R for im in images]
    U, _, Vt = np.linalg.svd(sum(rt.T @ re for rt, re in zip(R_true, R_est)))  # R_est = R_true @ R_align
    R_align = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    est = np.array([im.projection_center() for im in images]) @ R_align.T
    true = np.array([views[im.name].center for im in images])
    a, b = est - est.mean(0), true - true.mean(0)
    s = (a * b).sum() / (a * a).sum()
    centre = np.linalg.norm(s * a - b, axis=1)
    rot = [np.degrees(np.arccos(np.clip((np.trace(re @ R_align.T @ rt.T) - 1) / 2, -1, 1)))
           for re, rt in zip(R_est, R_true)]
    return np.array(rot), centre


def test_camera_groups_share_a_camera_per_folder_size_and_exif(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "b").mkdir()
    for name, size in (("a1.png", (64, 48)), ("a2.png", (64, 48)), ("a3.png", (48, 64)), ("b/b1.png", (64, 48))):
        Image.new("L", size).save(tmp_path / name)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Maker", "Zoom 1"
    Image.new("RGB", (64, 48)).save(tmp_path / "c1.jpg", exif=exif)
    Image.new("RGB", (64, 48)).save(tmp_path / "c2.jpg", exif=exif)
    exif[0x0110] = "Zoom 2"
    Image.new("RGB", (64, 48)).save(tmp_path / "c3.jpg", exif=exif)
    names = ["a1.png", "a2.png", "a3.png", "b/b1.png", "c1.jpg", "c2.jpg", "c3.jpg"]
    assert camera_groups(tmp_path, names) == [["a1.png", "a2.png"], ["a3.png"], ["b/b1.png"], ["c1.jpg", "c2.jpg"],
                                              ["c3.jpg"]]


def test_sfm_recovers_the_exact_poses_of_a_rendered_scene(rendered, tmp_path: Path) -> None:
    folder, rects, views = rendered
    names = sorted(views)
    pairs = sequential_pairs(names, 3)
    matches = write_final(tmp_path / "matches.h5", loftr_like_matches(rects, views, pairs), "{}", DEFAULT_QUANTIZE)
    r = sfm_from_matches(matches, folder, pairs, tmp_path / "sfm", num_threads=2)  # the defaults of `loftr sfm`
    assert r.registered == tuple(names) and r.num_models == 1
    assert not r.principal_point_refined  # 7 views: fewer than PRINCIPAL_POINT_MIN_IMAGES
    rec = pycolmap.Reconstruction(r.model_dir)
    assert r.num_points3d == rec.num_points3D() > 1000
    assert r.mean_reprojection_error < 1.0  # the matches' noise is 0.5 original px per axis
    assert r.mean_track_length > 2.5  # tracks run through several pairs: the per-image merge links them
    (camera,) = rec.cameras.values()  # one shared camera for frames of one camera
    assert camera.params[0] == pytest.approx(views[names[0]].K[0, 0], rel=0.03)  # focal found from a 1.2 x 400 guess
    rot, centre = pose_errors(rec, views)
    baseline = np.ptp([v.center for v in views.values()], axis=0).max()
    assert rot.max() < 0.5, rot
    assert centre.max() < 0.02 * baseline, centre / baseline


def test_a_final_bundle_adjustment_finds_an_off_centre_principal_point(tmp_path: Path) -> None:
    """12 views, turning about their optical axes by up to 30 degrees, whose principal point lies (24, -18) px off
    the centre of their 400x300 images: COLMAP holds it at the centre while mapping; the final bundle adjustment of
    `loftr sfm`'s defaults moves it to the truth and the poses follow. Held at the centre
    (``refine_principal_point=False``) the poses are worse. Without the roll the same views do not determine the
    point (two starts end apart) and it is not refined."""
    from PIL import Image

    from loftr.pipeline.colmap import PRINCIPAL_POINT_MIN_IMAGES, refine_principal_points

    truth = (199.5 + 24.0, 149.5 - 18.0)
    rects, named = sc.scene(), {}
    for i, v in enumerate(sc.views(12, principal=truth, roll=30.0)):
        named[f"frame_{i:02d}.png"] = v
        Image.new("L", v.size).save(tmp_path / f"frame_{i:02d}.png")  # COLMAP reads sizes only: matches are given
    names = sorted(named)
    assert len(names) >= PRINCIPAL_POINT_MIN_IMAGES
    pairs = sequential_pairs(names, 3)
    matches = write_final(tmp_path / "matches.h5", loftr_like_matches(rects, named, pairs), "{}", DEFAULT_QUANTIZE)
    auto = sfm_from_matches(matches, tmp_path, pairs, tmp_path / "auto", num_threads=2)
    held = sfm_from_matches(matches, tmp_path, pairs, tmp_path / "held", num_threads=2, refine_principal_point=False)
    assert auto.principal_point_refined and not held.principal_point_refined
    assert auto.registered == held.registered == tuple(names)
    rec, rec_held = pycolmap.Reconstruction(auto.model_dir), pycolmap.Reconstruction(held.model_dir)
    (camera,), (camera_held,) = rec.cameras.values(), rec_held.cameras.values()
    assert (camera_held.principal_point_x, camera_held.principal_point_y) == (200.0, 150.0)  # the centre, COLMAP's
    np.testing.assert_allclose([camera.principal_point_x - 0.5, camera.principal_point_y - 0.5], truth, atol=4.0)
    rot, centre = pose_errors(rec, named)
    rot_held, centre_held = pose_errors(rec_held, named)
    assert rot.mean() < 0.5 * rot_held.mean(), (rot, rot_held)
    assert centre.mean() < centre_held.mean()
    assert refine_principal_points(rec_held, max_shift=0.01) is None  # a 6 % move: not trusted, the caller keeps it

    flat = {n: v for n, v in zip(names, sc.views(12, principal=truth))}  # no roll: the arc leaves the point loose
    matches = write_final(tmp_path / "flat.h5", loftr_like_matches(rects, flat, pairs), "{}", DEFAULT_QUANTIZE)
    r = sfm_from_matches(matches, tmp_path, pairs, tmp_path / "flat", num_threads=2)
    assert r.registered == tuple(names) and not r.principal_point_refined


def test_a_misregistered_image_is_found_and_its_weakest_pair_dropped(rendered, tmp_path: Path) -> None:
    """A correct model has no misregistered image; one image turned half about (as one wrong pair on repeated
    structure can register it) is found, alone: every one of its pairs disagrees with the model, while each of its
    neighbours keeps most of its pairs. Its weakest pair is the one with the fewest inliers per match, and dropping
    it removes that geometry from the database."""
    from loftr.pipeline.colmap import drop_pairs, misregistered_images, weakest_pairs

    folder, rects, views = rendered
    names = sorted(views)
    pairs = sequential_pairs(names, 3)
    matches = write_final(tmp_path / "matches.h5", loftr_like_matches(rects, views, pairs), "{}", DEFAULT_QUANTIZE)
    r = sfm_from_matches(matches, folder, pairs, tmp_path / "sfm", num_threads=2)
    db_path = tmp_path / "sfm" / "database.db"
    rec = pycolmap.Reconstruction(r.model_dir)
    assert misregistered_images(rec, db_path, 4.0) == []
    image = next(im for im in rec.images.values() if im.name == names[3])
    frame = rec.frames[image.frame_id]
    half_turn = pycolmap.Rigid3d(pycolmap.Rotation3d(np.array([0.0, 1.0, 0.0, 0.0])), np.zeros(3))  # 180° about y
    frame.rig_from_world = half_turn * frame.rig_from_world
    assert misregistered_images(rec, db_path, 4.0) == [names[3]]

    (weakest,) = weakest_pairs(db_path, [names[3]])
    assert names[3] in weakest
    db = pycolmap.Database.open(db_path)
    try:
        ids = {im.name: im.image_id for im in db.read_all_images()}
        ratio = {p: db.read_two_view_geometry(ids[p[0]], ids[p[1]]).inlier_matches.shape[0]
                 / len(db.read_matches(ids[p[0]], ids[p[1]])) for p in pairs if names[3] in p}
    finally:
        db.close()
    assert ratio[weakest] == min(ratio.values())
    drop_pairs(db_path, [weakest])
    db = pycolmap.Database.open(db_path)
    try:
        assert not db.exists_two_view_geometry(ids[weakest[0]], ids[weakest[1]])
        assert db.num_verified_image_pairs() == len(pairs) - 1
    finally:
        db.close()


def test_database_holds_the_merged_keypoints_and_matches_of_the_file(rendered, tmp_path: Path) -> None:
    folder, rects, views = rendered
    names = sorted(views)[:3]
    pairs = sequential_pairs(names, 2)
    matches = write_final(tmp_path / "m.h5", loftr_like_matches(rects, views, pairs), "{}", DEFAULT_QUANTIZE)
    for mode, cameras in (("auto", 1), ("per_image", 3)):
        ids = create_database(tmp_path / f"{mode}.db", folder, matches, pairs, camera_mode=mode)
        assert _shares_cameras(tmp_path / f"{mode}.db") == (cameras == 1)  # which bogus-camera limits map it
        db = pycolmap.Database.open(tmp_path / f"{mode}.db")
        try:
            assert db.num_images() == 3 and db.num_cameras() == cameras
            cam = db.read_all_cameras()[0]
            assert (cam.width, cam.height) == (400, 300)
            for a, b in pairs:
                k0, k1, _ = read_matches(matches, a, b)
                m = db.read_matches(ids[a], ids[b])
                kp0, kp1 = db.read_keypoints(ids[a]), db.read_keypoints(ids[b])
                assert len(m) == len(k0) > 300
                np.testing.assert_allclose(kp0[m[:, 0], :2] - 0.5, k0, atol=1e-4)  # COLMAP: pixel centres at +0.5
                np.testing.assert_allclose(kp1[m[:, 1], :2] - 0.5, k1, atol=1e-4)
        finally:
            db.close()


def test_loftr_sfm_command_on_the_rendered_scene_with_the_bundled_model(rendered, tmp_path: Path, capsys) -> None:
    """The whole command with its defaults but fewer pairs and a small matching size. Loose bounds: they hold for
    any weights that match at all, so a failure here is the pipeline's (SfM quality: benchmarks/bench_sfm.py)."""
    folder, _, views = rendered
    rc = main(["sfm", str(folder), "--out", str(tmp_path / "sfm"), "--sequential", "3", "--max-size", "256",
               "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    rec = pycolmap.Reconstruction(tmp_path / "sfm" / "sparse" / out.split("sparse/")[-1].strip())
    assert f"registered {rec.num_reg_images()}/{len(views)} images" in out
    assert rec.num_reg_images() >= 4 and rec.num_points3D() >= 100
    assert rec.compute_mean_reprojection_error() < 2.0
    rot, _ = pose_errors(rec, views)
    assert rot.max() < 5.0, rot


def test_a_known_camera_is_used_held_fixed_or_refined(rendered, tmp_path: Path) -> None:
    """--camera: a wrong focal length held fixed comes out exactly as given (the guess of 1.2 x the size is not
    used); refined from there, it moves most of the way to the scene's true focal length."""
    folder, rects, views = rendered
    names = sorted(views)
    pairs = sequential_pairs(names, 3)
    matches = write_final(tmp_path / "matches.h5", loftr_like_matches(rects, views, pairs), "{}", DEFAULT_QUANTIZE)
    K = views[names[0]].K
    given = make_camera("PINHOLE", [300.0, 300.0, K[0, 2], K[1, 2]])  # true focal 330
    fixed = sfm_from_matches(matches, folder, pairs, tmp_path / "fixed", camera=given, num_threads=2)
    (camera,) = pycolmap.Reconstruction(fixed.model_dir).cameras.values()
    assert camera.model.name == "PINHOLE"
    np.testing.assert_allclose(camera.params, [300.0, 300.0, K[0, 2] + 0.5, K[1, 2] + 0.5])  # COLMAP's +0.5
    assert fixed.focal_lengths == (300.0,)
    refined = sfm_from_matches(matches, folder, pairs, tmp_path / "refined", camera=given, refine_camera=True,
                               num_threads=2)
    assert refined.registered == tuple(names)
    assert abs(refined.focal_lengths[0] - K[0, 0]) < 0.4 * abs(300.0 - K[0, 0])
    assert refined.mean_reprojection_error < fixed.mean_reprojection_error


def test_loftr_sfm_with_camera_in_original_pixels_while_matching_smaller(rendered, tmp_path: Path, capsys) -> None:
    """`loftr sfm --camera PINHOLE fx,fy,cx,cy` in pixels of the 400x300 images while matching at 256 px: the
    model keeps exactly that camera and its points reproject within the matching accuracy (a camera applied at
    the matching scale would be 1.56x off and register nothing)."""
    folder, _, views = rendered
    K = views[sorted(views)[0]].K
    cam = f"{K[0, 0]},{K[1, 1]},{K[0, 2]},{K[1, 2]}"
    rc = main(["sfm", str(folder), "--out", str(tmp_path / "sfm"), "--sequential", "3", "--max-size", "256",
               "--no-progress", "--camera", "PINHOLE", cam])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "(given)" in out
    rec = pycolmap.Reconstruction(tmp_path / "sfm" / "sparse" / out.split("sparse/")[-1].strip())
    (camera,) = rec.cameras.values()
    np.testing.assert_allclose(camera.params, [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5])
    assert rec.num_reg_images() >= 4 and rec.compute_mean_reprojection_error() < 2.0


def test_refine_camera_without_camera_is_one_clear_error(rendered, tmp_path: Path, capsys) -> None:
    folder, _, _ = rendered
    assert main(["sfm", str(folder), "--out", str(tmp_path / "sfm"), "--no-refine-camera"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "need --camera" in err[0]


def test_a_pair_with_few_inliers_per_match_is_not_verified(rendered, tmp_path: Path) -> None:
    """LoFTR matches any two views: a pair whose matches are two thirds random (one third exact) passes COLMAP's
    inlier count but not ``min_inlier_ratio`` 0.5, while the exact pairs pass either way."""
    from loftr.pipeline.colmap import verify

    folder, rects, views = rendered
    names = sorted(views)[:3]
    pairs = sequential_pairs(names, 2)
    results = loftr_like_matches(rects, views, pairs)
    rng = np.random.default_rng(1)
    r = results[f"{names[0]}/{names[2]}"]
    n, (w, h) = 2 * len(r.keypoints0), r.size0
    wrong0, wrong1 = (rng.uniform(0, 1, (n, 2)) * (w - 1, h - 1) for _ in range(2))
    results[r.key] = PairResult(r.name0, r.name1, np.concatenate([r.keypoints0, wrong0]).astype(np.float32),
                                np.concatenate([r.keypoints1, wrong1]).astype(np.float32),
                                np.full(3 * len(r.keypoints0), 0.5, np.float32), r.size0, r.size1, r.scale0, r.scale1)
    matches = write_final(tmp_path / "m.h5", results, "{}", DEFAULT_QUANTIZE)
    for ratio, expected in ((0.0, 3), (0.5, 2)):
        db = tmp_path / f"r{ratio}.db"
        ids = create_database(db, folder, matches, pairs)
        assert verify(db, pairs, tmp_path / "pairs.txt", min_inlier_ratio=ratio) == expected
        opened = pycolmap.Database.open(db)
        try:
            inliers = opened.read_two_view_geometry(ids[names[0]], ids[names[2]]).inlier_matches
            assert (len(inliers) > 100) == (ratio == 0.0)
        finally:
            opened.close()
