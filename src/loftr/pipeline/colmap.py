"""Structure from motion with LoFTR matches: COLMAP database, geometric verification, incremental mapping (pycolmap).

Steps of :func:`run_sfm`: ``match_pairs`` → ``matches.h5`` (resumable); the images go into a new COLMAP database
through ``pycolmap.import_images`` (cameras from EXIF when present, else focal = 1.2 × the longest side; in the
default camera mode ``auto`` images share a camera when they are one camera's frames, see :func:`camera_groups`;
a known calibration, :class:`~loftr.pipeline.camera.CameraSpec`, replaces the guess and is held fixed or refined); the
merged per-image keypoints (+0.5: COLMAP puts pixel centres at half-integers) and the index matches of every pair
are written to it; ``pycolmap.verify_matches`` estimates the two-view geometries (E, F or H by RANSAC, COLMAP's
options, and at least :data:`MIN_INLIER_RATIO` inliers per match) and ``pycolmap.incremental_mapping``
reconstructs. The largest model is written to ``OUT/sparse/0``.

Self-calibration and COLMAP's "bogus camera" filter: without a known calibration the mapper refines the focal length
and radial distortion from the first images on. COLMAP drops every image whose camera has a focal length outside
[0.1, 10] x its size or a distortion |k| > 1 — a filter meant for per-image EXIF cameras. With one camera shared by
a sequence, one excursion of the intrinsics while few images constrain them (forward motion leaves them
ill-conditioned) drops all images of that camera at once and splits the sequence into small models, which BA
later would have brought back (20 KITTI frames: 3-14/20 registered with COLMAP's limits, 20/20 with wider ones).
So the mapper runs with that filter widened to :data:`MAPPING_BOGUS_LIMITS` where a camera is shared (per-image
cameras keep COLMAP's filter), and the final model's cameras are checked against COLMAP's own limits
(:attr:`SfMResult.bogus_cameras`). A forward-moving sequence still cannot fix the focal length (the one found may be
off by a large factor): give the calibration there (``camera=``, ``--camera``).

The principal point: COLMAP holds it at the image centre, where few cameras have it (castle-P19's lies 9 px off in
1536x1024 images), and that offset bends every pose by a fraction of a degree. Once the model is built, a final
bundle adjustment refines it with the focal length and distortion, where every camera of the model holds at least
:data:`PRINCIPAL_POINT_MIN_IMAGES` registered images. The images must determine it: refined again from a start 5 %
of the image away it must end at the same point, else (forward motion, views all turning about one axis) the model
is kept as the mapper left it (:func:`refine_principal_points`). Measured on castle-P19: benchmarks/README.md.

Misregistered images: one wrong pair that passes verification (repeated facades) can register an image turned
about; the mapper keeps it, and every true pair of that image then disagrees with the model. After mapping,
:func:`misregistered_images` finds such images, the pair with the fewest inliers per match of each is dropped
(:func:`weakest_pairs`) and the model is mapped again, at most :data:`MAX_REMAPS` times.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from . import PipelineError, require
from .batch import match_pairs
from .camera import CameraSpec
from .h5 import DEFAULT_QUANTIZE, pair_key
from .pairs import Pair, write_pairs

if TYPE_CHECKING:
    from ..matcher import Matcher

log = logging.getLogger(__name__)

CAMERA_MODES = ("auto", "single", "per_folder", "per_image")
MAPPING_BOGUS_LIMITS = (1e-3, 1e3, 1e3)
"""(min focal / size, max focal / size, max |extra parameter|) beyond which the mapper drops an image's camera as
bogus while mapping; COLMAP's own (0.1, 10, 1) judge the final model (:data:`COLMAP_BOGUS_LIMITS`)."""
COLMAP_BOGUS_LIMITS = (0.1, 10.0, 1.0)
PRINCIPAL_POINT_MIN_IMAGES = 10
"""Fewest registered images of each camera of a model for the final bundle adjustment to refine principal points."""
PRINCIPAL_POINT_MAX_SHIFT = 0.1
"""Largest move of a refined principal point, as a share of the image's width and height, that is kept."""
PRINCIPAL_POINT_AGREEMENT = 0.005
"""Largest distance, as a share of the image size, between the principal points refined from two starts 5 % apart
for the refinement to be kept (:func:`refine_principal_points`)."""
MISREGISTERED_SHARE = 0.5
"""An image of a model whose verified pairs' inliers agree with the model less than this share (Sampson distance to
the model's epipolar geometry within verification's threshold) is misregistered (:func:`misregistered_images`)."""
MAX_REMAPS = 2
"""How many times :func:`sfm_from_matches` maps again after dropping the pair that misregistered an image."""
MIN_INLIER_RATIO = 0.5
"""Fewest inliers per match of a verified pair. LoFTR matches any two images, also views that do not overlap,
and on repeated structure RANSAC's F then finds a hundred inliers or more among them: of castle-P19's 171 pairs, 103
wrong ones passed COLMAP's checks (inlier ratios 0.21-0.63 against 0.32-0.98 of the true ones; docs/pipeline.md)."""


@dataclass(frozen=True)
class SfMResult:
    """The largest reconstruction: its folder, registered image names, 3-D points, mean reprojection error (px)
    and mean track length; ``num_images`` images were given and ``num_models`` models came out. ``focal_lengths``:
    the mean focal length (px) of each camera of the model; ``bogus_cameras``: how many of them COLMAP's own limits
    (:data:`COLMAP_BOGUS_LIMITS`) call bogus; ``principal_point_refined``: whether the final bundle adjustment
    refined the principal points (module doc)."""

    model_dir: Path | None
    num_images: int
    registered: tuple[str, ...]
    num_points3d: int
    mean_reprojection_error: float
    mean_track_length: float
    num_models: int
    focal_lengths: tuple[float, ...] = ()
    bogus_cameras: int = 0
    principal_point_refined: bool = False

    @property
    def num_registered(self) -> int:
        return len(self.registered)


def _pycolmap():
    return require("pycolmap", "pycolmap", "COLMAP export and SfM")


def _camera_key(path: Path) -> tuple:
    """What tells one camera from another without calibration: the image size after EXIF orientation and the EXIF
    make, model and focal length (all None for an image without EXIF, e.g. a PNG video frame)."""
    from PIL import Image

    from .batch import image_size

    size = image_size(path)
    try:
        with Image.open(path) as img:
            exif = img.getexif()
            sub = exif.get_ifd(0x8769)  # the Exif IFD holds the focal length
            make, model, focal = exif.get(0x010F), exif.get(0x0110), sub.get(0x920A)
    except (OSError, ValueError):  # unreadable EXIF: the size alone decides
        make = model = focal = None
    return (size, *(None if v is None else str(v).strip() for v in (make, model, focal)))


def camera_groups(image_dir: str | Path, names: Sequence[str]) -> list[list[str]]:
    """The images of camera mode ``auto`` that share one camera: same folder, same size and same EXIF make, model
    and focal length. A video or a sequence from one camera gets one camera, so all its frames calibrate it
    together (one focal length per frame is ill-posed for a forward-moving camera: each drifts off on its own);
    photos from several cameras, sizes or zoom settings get several. Groups in order of their first name."""
    groups: dict[tuple, list[str]] = {}
    for name in sorted(names):
        folder = name.rsplit("/", 1)[0] if "/" in name else ""
        groups.setdefault((folder, _camera_key(Path(image_dir) / name)), []).append(name)
    return list(groups.values())


def create_database(db_path: str | Path, image_dir: str | Path, matches_h5: str | Path, pairs: Sequence[Pair],
                    *, camera_mode: str = "auto", camera_model: str = "SIMPLE_RADIAL",
                    camera: CameraSpec | None = None) -> dict[str, int]:
    """A new COLMAP database with the images of ``pairs``, their merged keypoints and the pairs' matches from a
    final ``match-pairs`` file. ``camera_mode``: ``auto`` (:func:`camera_groups`), ``single`` (one camera),
    ``per_folder`` or ``per_image`` (COLMAP's). ``camera``: known intrinsics (original pixels) given to every camera
    instead of COLMAP's guess, marked as a prior focal length. Returns image name → COLMAP image id."""
    pycolmap = _pycolmap()
    import h5py

    if camera_mode not in CAMERA_MODES:
        raise PipelineError(f"unknown camera mode {camera_mode!r}; use one of {', '.join(CAMERA_MODES)}")
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    db_path.unlink(missing_ok=True)
    pycolmap.Database.open(db_path).close()  # import_images needs the file to exist
    names = sorted({n for p in pairs for n in p})
    options = pycolmap.ImageReaderOptions()
    options.camera_model = camera_model
    if camera_mode == "auto":  # one import per group: each import makes one camera shared by its images
        for group in camera_groups(image_dir, names):
            pycolmap.import_images(db_path, Path(image_dir), pycolmap.CameraMode.SINGLE, group, options)
    else:
        pycolmap.import_images(db_path, Path(image_dir), getattr(pycolmap.CameraMode, camera_mode.upper()), names,
                               options)
    db = pycolmap.Database.open(db_path)
    try:
        ids = {img.name: img.image_id for img in db.read_all_images()}
        missing = [n for n in names if n not in ids]
        if missing:
            raise PipelineError(f"COLMAP could not import {len(missing)} images, e.g. {missing[0]}")
        if camera is not None:
            for cam in db.read_all_cameras():
                db.update_camera(_known_camera(pycolmap, cam.camera_id, camera, cam.width, cam.height))
        with h5py.File(matches_h5, "r") as f:
            for name in names:
                if name not in f or "keypoints" not in f[name]:
                    raise PipelineError(f"{matches_h5} has no keypoints of {name}; run match-pairs on these pairs")
                camera = db.read_camera(db.read_image(ids[name]).camera_id)
                w, h = (int(v) for v in f[name]["image_size"][()])
                if (camera.width, camera.height) != (w, h):
                    raise PipelineError(f"{name}: COLMAP reads it as {camera.width}x{camera.height} but it is {w}x{h} "
                                        "after its EXIF orientation; save the image rotated")
                db.write_keypoints(ids[name], np.ascontiguousarray(f[name]["keypoints"][()] + 0.5, np.float32))
            for a, b in pairs:
                m0 = f[pair_key(a, b)]["matches0"][()]
                idx = np.flatnonzero(m0 >= 0)
                db.write_matches(ids[a], ids[b], np.stack([idx, m0[idx]], 1).astype(np.uint32))
    finally:
        db.close()
    log.info("COLMAP database %s: %d images, %d pairs", db_path, len(names), len(pairs))
    return ids


def _known_camera(pycolmap, camera_id: int, spec: CameraSpec, width: int, height: int):
    """A pycolmap camera of ``width`` x ``height`` with the intrinsics of ``spec`` and a prior focal length."""
    cam = pycolmap.Camera.create_from_model_name(camera_id, spec.model, 1.0, width, height)
    cam.params = list(spec.for_size(width, height))
    cx, cy = cam.principal_point_x, cam.principal_point_y
    if not (0 <= cx <= width and 0 <= cy <= height):
        raise PipelineError(f"the camera's principal point ({cx - 0.5:g}, {cy - 0.5:g}) lies outside the "
                            f"{width}x{height} images; give the parameters in pixels of the original images")
    cam.has_prior_focal_length = True
    return cam


def verify(db_path: str | Path, pairs: Sequence[Pair], pairs_path: str | Path, *, max_error: float = 4.0,
           min_inliers: int = 15, max_trials: int = 2000, min_inlier_ratio: float = 0.0) -> int:
    """Two-view geometries of the matched pairs (pycolmap.verify_matches: E, F or H by RANSAC of at most
    ``max_trials`` iterations, inliers within ``max_error`` px); a pair with fewer than ``min_inliers`` inliers or
    a smaller fraction ``min_inlier_ratio`` of its matches is not verified. Returns the number of verified pairs."""
    pycolmap = _pycolmap()
    write_pairs(pairs_path, pairs)
    options = pycolmap.TwoViewGeometryOptions()
    options.ransac.max_error = float(max_error)
    options.ransac.max_num_trials = int(max_trials)
    options.min_num_inliers = int(min_inliers)
    options.min_inlier_ratio = float(min_inlier_ratio)
    options.ransac.random_seed = 0
    pycolmap.verify_matches(Path(db_path), Path(pairs_path), options)
    db = pycolmap.Database.open(Path(db_path))
    try:  # a rejected pair keeps a geometry without inliers (num_verified_image_pairs counts it too)
        return sum(len(g.inlier_matches) > 0 for g in db.read_two_view_geometries()[1])
    finally:
        db.close()


def reconstruct(db_path: str | Path, image_dir: str | Path, out_dir: str | Path, *, num_images: int,
                min_matches: int = 15, init_min_inliers: int = 100, abs_pose_min_inliers: int = 30,
                pixel_scale: float = 1.0, num_threads: int = -1, refine_camera: bool = True,
                bogus_limits: tuple[float, float, float] = MAPPING_BOGUS_LIMITS,
                refine_principal_point: bool | None = None) -> SfMResult:
    """Incremental mapping; the largest model goes to ``out_dir/N`` (COLMAP's binary format).

    ``refine_camera``: refine the focal length and distortion (COLMAP's default); False holds the database's
    cameras fixed (a known calibration). ``bogus_limits``: (min focal / size, max focal / size, max |extra|) past
    which the mapper drops a camera's images (see the module doc). ``refine_principal_point``: a final bundle
    adjustment refining the principal points too; None (default): when ``refine_camera`` and every camera of the model
    holds at least :data:`PRINCIPAL_POINT_MIN_IMAGES` registered images (:func:`refine_principal_points`).

    ``pixel_scale`` (original pixels per matching pixel) multiplies COLMAP's pixel thresholds, which assume
    keypoints located to about a pixel of the original image; ``init_min_inliers`` / ``abs_pose_min_inliers``: the
    fewest inliers of the initial pair / of a new image's pose (COLMAP's 100 / 30 suit dense detectors).
    """
    pycolmap = _pycolmap()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = pycolmap.IncrementalPipelineOptions()
    options.min_num_matches = int(min_matches)
    options.num_threads = int(num_threads)
    options.random_seed = 0
    mapper, tri = options.mapper, options.triangulation
    for opts in (options, mapper):
        opts.min_focal_length_ratio, opts.max_focal_length_ratio, opts.max_extra_param = bogus_limits
    if not refine_camera:
        options.ba_refine_focal_length = options.ba_refine_extra_params = False
        options.ba_refine_principal_point = False
        mapper.abs_pose_refine_focal_length = mapper.abs_pose_refine_extra_params = False
    mapper.init_min_num_inliers = int(init_min_inliers)
    mapper.abs_pose_min_num_inliers = int(abs_pose_min_inliers)
    for opts, field in ((mapper, "init_max_error"), (mapper, "abs_pose_max_error"), (mapper, "filter_max_reproj_error"),
                        (tri, "merge_max_reproj_error"), (tri, "complete_max_reproj_error")):
        setattr(opts, field, getattr(opts, field) * float(pixel_scale))
    models = pycolmap.incremental_mapping(Path(db_path), Path(image_dir), out_dir, options)
    if not models:
        return SfMResult(None, num_images, (), 0, float("nan"), float("nan"), 0)
    best_id = max(models, key=lambda k: models[k].num_reg_images())
    rec = models[best_id]
    if refine_principal_point is None:
        per_camera = np.bincount([rec.images[i].camera_id for i in rec.reg_image_ids()])
        refine_principal_point = refine_camera and per_camera[per_camera > 0].min() >= PRINCIPAL_POINT_MIN_IMAGES
    trial = refine_principal_points(rec, refine_camera) if refine_principal_point else None
    rec = rec if trial is None else trial
    model_dir = out_dir / str(best_id)
    rec.write(model_dir)
    registered = tuple(sorted(rec.images[i].name for i in rec.reg_image_ids()))
    cameras = [rec.cameras[k] for k in sorted({rec.images[i].camera_id for i in rec.reg_image_ids()})]
    bogus = sum(bool(c.has_bogus_params(*COLMAP_BOGUS_LIMITS)) for c in cameras)
    result = SfMResult(model_dir, num_images, registered, int(rec.num_points3D()),
                       float(rec.compute_mean_reprojection_error()), float(rec.compute_mean_track_length()),
                       len(models), tuple(float(c.mean_focal_length()) for c in cameras), bogus, trial is not None)
    log.info("reconstruction: %d/%d images registered, %d points, mean reprojection error %.3f px",
             result.num_registered, num_images, result.num_points3d, result.mean_reprojection_error)
    if bogus:
        log.warning("%d camera(s) of the model have implausible intrinsics (COLMAP's limits): give the calibration",
                    bogus)
    return result


def refine_principal_points(rec, refine_intrinsics: bool = True, max_shift: float = PRINCIPAL_POINT_MAX_SHIFT,
                            agreement: float = PRINCIPAL_POINT_AGREEMENT):
    """A copy of ``rec`` (a pycolmap Reconstruction) after a bundle adjustment that refines every camera's principal
    point, with its focal length and extra parameters when ``refine_intrinsics``; None when the images do not
    determine the principal point, so that the caller keeps ``rec``. Determined means: a second adjustment started
    from principal points moved by 5 % of the image size ends within ``agreement`` of the size at the same points
    (a flat optimum, as forward motion or views that all turn about one axis give, ends wherever it starts), and no
    principal point moved more than ``max_shift`` of its image's width or height."""
    pycolmap = _pycolmap()
    options = pycolmap.BundleAdjustmentOptions()
    options.refine_principal_point = True
    options.refine_focal_length = options.refine_extra_params = bool(refine_intrinsics)
    trials = []
    for start in (0.0, 0.05):
        trial = pycolmap.Reconstruction(rec)
        for cam in trial.cameras.values():
            cam.principal_point_x += start * cam.width
            cam.principal_point_y += start * cam.height
        pycolmap.bundle_adjustment(trial, options)
        trials.append(trial)
    for cam_id, before in rec.cameras.items():
        size = np.array([before.width, before.height], np.float64)
        p0, p1 = (np.array([t.cameras[cam_id].principal_point_x, t.cameras[cam_id].principal_point_y]) for t in trials)
        shift, spread = np.max(np.abs(p0 - [before.principal_point_x, before.principal_point_y]) / size), \
            np.max(np.abs(p1 - p0) / size)
        if not (shift <= max_shift and spread <= agreement and np.all(np.isfinite(trials[0].cameras[cam_id].params))):
            log.info("principal point of camera %d not determined by the images (moved %.1f %%, two starts %.1f %% "
                     "apart): kept at (%.1f, %.1f)", cam_id, 100 * shift, 100 * spread, before.principal_point_x,
                     before.principal_point_y)
            return None
    return trials[0]


def misregistered_images(rec, db_path: str | Path, max_error: float,
                         share: float = MISREGISTERED_SHARE) -> list[str]:
    """Names of the registered images of ``rec`` (a pycolmap Reconstruction of the database ``db_path``) whose verified
    pairs with other registered images disagree with the model: fewer than ``share`` of those pairs' inliers, all
    pairs together, lie within ``max_error`` px (Sampson distance) of the epipolar geometry of the model's two
    cameras. One wrong pair (repeated structure) can register an image turned about, and every true pair of that
    image then disagrees with the model."""
    from ..geometry import fundamental_from_pose, sampson_distance

    pycolmap = _pycolmap()
    images = {rec.images[i].name: rec.images[i] for i in rec.reg_image_ids()}
    agree: dict[str, float] = {}
    total: dict[str, float] = {}
    db = pycolmap.Database.open(Path(db_path))
    try:
        names = {im.image_id: im.name for im in db.read_all_images()}
        xy = {i: db.read_keypoints(i)[:, :2] for i, n in names.items() if n in images}  # once per image
        for pair_id, g in zip(*db.read_two_view_geometries()):
            m = g.inlier_matches
            i, j = pycolmap.pair_id_to_image_pair(pair_id)
            a, b = names[i], names[j]
            if len(m) == 0 or a not in images or b not in images:
                continue
            rel = images[b].cam_from_world() * images[a].cam_from_world().inverse()  # camera a -> camera b
            F = fundamental_from_pose(rel.rotation.matrix(), rel.translation,
                                      rec.cameras[images[a].camera_id].calibration_matrix(),
                                      rec.cameras[images[b].camera_id].calibration_matrix())
            d = sampson_distance(xy[i][m[:, 0]], xy[j][m[:, 1]], F)
            good = float(np.sum(d <= max_error))
            for n in (a, b):
                agree[n] = agree.get(n, 0.0) + good
                total[n] = total.get(n, 0.0) + len(m)
    finally:
        db.close()
    return sorted(n for n in total if agree[n] < share * total[n])


def weakest_pairs(db_path: str | Path, names: Sequence[str]) -> list[Pair]:
    """For each image of ``names``: its verified pair with the smallest share of inliers among its matches (the
    likeliest wrong pair: on castle-P19 the wrong pairs verify at 0.50-0.63, most true ones well above)."""
    pycolmap = _pycolmap()
    db = pycolmap.Database.open(Path(db_path))
    try:
        ids = {im.image_id: im.name for im in db.read_all_images()}
        best: dict[str, tuple[float, Pair]] = {}
        for pair_id, g in zip(*db.read_two_view_geometries()):
            if len(g.inlier_matches) == 0:
                continue
            i, j = pycolmap.pair_id_to_image_pair(pair_id)
            ratio = len(g.inlier_matches) / max(1, len(db.read_matches(i, j)))
            for n in (ids[i], ids[j]):
                if n in names and (n not in best or ratio < best[n][0]):
                    best[n] = (ratio, (ids[i], ids[j]))
        return sorted({p for _, p in best.values()})
    finally:
        db.close()


def drop_pairs(db_path: str | Path, pairs: Sequence[Pair]) -> None:
    """Remove the two-view geometries of ``pairs`` from the database: the mapper no longer uses them."""
    pycolmap = _pycolmap()
    db = pycolmap.Database.open(Path(db_path))
    try:
        for a, b in pairs:
            db.delete_two_view_geometry(db.read_image_with_name(a).image_id, db.read_image_with_name(b).image_id)
    finally:
        db.close()


def pixel_scale_of(matches_h5: str | Path) -> float:
    """Median original pixels per network-input pixel over the images of a final ``match-pairs`` file."""
    from .h5 import read_raw

    scales = {}
    for r in read_raw(matches_h5).values():
        scales[r.name0], scales[r.name1] = r.scale0, r.scale1
    return float(np.median([1.0 / np.mean(s) for s in scales.values()])) if scales else 1.0


def _shares_cameras(db_path: Path) -> bool:
    """True when some camera of the database holds several images."""
    db = _pycolmap().Database.open(db_path)
    try:
        return db.num_cameras() < db.num_images()
    finally:
        db.close()


def run_sfm(matcher: "Matcher", image_dir: str | Path, pairs: Sequence[Pair], out_dir: str | Path, *,
            batch_size: int = 4, workers: int = 0, quantize: float = DEFAULT_QUANTIZE, camera_mode: str = "auto",
            min_matches: int = 15, init_min_inliers: int = 30, abs_pose_min_inliers: int = 15,
            num_threads: int = -1, progress: bool = False, camera: CameraSpec | None = None,
            refine_camera: bool | None = None, min_inlier_ratio: float = MIN_INLIER_RATIO,
            refine_principal_point: bool | None = None) -> SfMResult:
    """Match into ``out_dir/matches.h5`` (:func:`~loftr.pipeline.batch.match_pairs`, resumable), then
    :func:`sfm_from_matches` into ``out_dir`` (database.db, pairs.txt, sparse/)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    matches = out_dir / "matches.h5"
    match_pairs(matcher, image_dir, pairs, matches, batch_size=batch_size, workers=workers, quantize=quantize,
                progress=progress)
    return sfm_from_matches(matches, image_dir, pairs, out_dir, camera_mode=camera_mode, min_matches=min_matches,
                            init_min_inliers=init_min_inliers, abs_pose_min_inliers=abs_pose_min_inliers,
                            num_threads=num_threads, camera=camera, refine_camera=refine_camera,
                            min_inlier_ratio=min_inlier_ratio, refine_principal_point=refine_principal_point)


def sfm_from_matches(matches: str | Path, image_dir: str | Path, pairs: Sequence[Pair], out_dir: str | Path, *,
                     camera_mode: str = "auto", min_matches: int = 15, init_min_inliers: int = 30,
                     abs_pose_min_inliers: int = 15, num_threads: int = -1, camera: CameraSpec | None = None,
                     refine_camera: bool | None = None, min_inlier_ratio: float = MIN_INLIER_RATIO,
                     refine_principal_point: bool | None = None) -> SfMResult:
    """Database, verification and reconstruction into ``out_dir`` from a final ``match-pairs`` file of ``pairs``.
    COLMAP's pixel thresholds (4 px) become 2 network-input pixels when images are shrunk more than 2x for
    matching; the inlier minimums default lower than COLMAP's, for LoFTR's sparser matches at small sizes.
    ``camera``: a known calibration in original pixels, held fixed unless ``refine_camera`` (default: refine only
    a guessed camera). ``refine_principal_point``: see :func:`reconstruct`."""
    pycolmap = _pycolmap()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    factor = max(1.0, pixel_scale_of(matches) / 2.0)
    db = out_dir / "database.db"
    level = pycolmap.logging.minloglevel
    if not log.isEnabledFor(logging.INFO):  # COLMAP's own log only when ours is verbose
        pycolmap.logging.minloglevel = 2
    try:
        create_database(db, image_dir, matches, pairs, camera_mode=camera_mode, camera=camera)
        verified = verify(db, pairs, out_dir / "pairs.txt", max_error=4.0 * factor, min_inliers=min_matches,
                          min_inlier_ratio=min_inlier_ratio)
        log.info("%d of %d pairs passed geometric verification", verified, len(pairs))
        if verified == 0:
            raise PipelineError("no pair passed geometric verification: nothing to reconstruct")
        n_images = len({n for p in pairs for n in p})
        limits = MAPPING_BOGUS_LIMITS if _shares_cameras(db) else COLMAP_BOGUS_LIMITS
        for attempt in range(MAX_REMAPS + 1):
            shutil.rmtree(out_dir / "sparse", ignore_errors=True)
            result = reconstruct(db, image_dir, out_dir / "sparse", num_images=n_images, min_matches=min_matches,
                                 init_min_inliers=init_min_inliers, abs_pose_min_inliers=abs_pose_min_inliers,
                                 pixel_scale=factor, num_threads=num_threads,
                                 refine_camera=camera is None if refine_camera is None else refine_camera,
                                 bogus_limits=limits, refine_principal_point=refine_principal_point)
            wrong = [] if result.model_dir is None or attempt == MAX_REMAPS else \
                misregistered_images(pycolmap.Reconstruction(result.model_dir), db, 4.0 * factor)
            if not wrong:
                break
            dropped = weakest_pairs(db, wrong)
            log.warning("misregistered (their pairs disagree with the model): %s; mapping again without %s",
                        ", ".join(wrong), ", ".join(f"{a}-{b}" for a, b in dropped))
            drop_pairs(db, dropped)
        return result
    finally:
        pycolmap.logging.minloglevel = level


__all__ = ["SfMResult", "create_database", "verify", "reconstruct", "run_sfm", "sfm_from_matches", "pixel_scale_of",
           "camera_groups", "refine_principal_points", "CAMERA_MODES", "MAPPING_BOGUS_LIMITS", "COLMAP_BOGUS_LIMITS",
           "MIN_INLIER_RATIO", "misregistered_images", "weakest_pairs", "drop_pairs", "MISREGISTERED_SHARE", "MAX_REMAPS",
           "PRINCIPAL_POINT_MIN_IMAGES", "PRINCIPAL_POINT_MAX_SHIFT", "PRINCIPAL_POINT_AGREEMENT"]
