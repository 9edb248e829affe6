"""SfM quality with the real weights: `loftr sfm` with its DEFAULT options next to pycolmap's own SIFT pipeline.

Data: the 20 consecutive KITTI street frames (1241x376) of ../shared/data/photos (``*kitti_0001*``); without them
the script says so and exits 0. Both pipelines get the same frames in a fresh folder:

- loftr: ``loftr sfm DIR --out OUT`` and nothing else (default pairs, matching size, keypoint merge, cameras and
  mapper options), in a subprocess of this interpreter, timed end to end (matching included); ``--loftr-args``
  adds options to it (e.g. ``"--max-std 0"``: without the bundled weights' fine match filter);
- SIFT: pycolmap's defaults: ``extract_features`` (camera mode AUTO), ``match_exhaustive``, ``verify`` inside it,
  ``incremental_mapping``; and the same with one shared camera (``CameraMode.SINGLE``), as `loftr sfm` shares one
  for a sequence.

Per pipeline: registered images of the largest model, its 3-D points, mean reprojection error (px), mean track
length, number of models, the focal length(s) found (KITTI's calibration: about 718 px) and the time. Prints a
markdown table (``--json FILE`` also writes the numbers). A quality bar, not a test: ``--check`` exits 1 unless
loftr registers at least 18 of 20 frames in one model with a mean reprojection error under 1.5 px.

With ``--scene DIR`` (a scene of ``../shared/data/posed``: ``images/`` and ``cameras.json``, e.g. castle-P19 with
Strecha's ground-truth cameras, or fox) the same two pipelines run on that scene's images and are also scored
against the true cameras: the relative pose of every pair of images (max of the rotation and translation-direction
angles, a pair with an unregistered image counting as failed) summarised as pose AUC@5/10/20 degrees, and the error
of the focal length found against the true one. ``--true-camera`` adds a loftr row given the scene's true
intrinsics (``--camera PINHOLE``, their mean over the images, held fixed). A last row gives the one-camera SIFT
model the final bundle adjustment `loftr sfm` adds (principal point refined where the images determine it), so that
what the step gives is told apart from what the matches give.

    python benchmarks/bench_sfm.py [--device cpu|cuda] [--check] [--json out.json] [--loftr-args "--max-std 0"]
    python benchmarks/bench_sfm.py --scene ../shared/data/posed/castle-P19 [--true-camera] [--step 2]
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
PATTERN = "*kitti_0001*"


def frames(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(PATTERN) if p.suffix.lower() == ".png")


def copy_frames(src: list[Path], dst: Path) -> Path:
    """The frames under their short names (kitti_000100.png, ...) in ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in src:
        shutil.copy(p, dst / p.name.split("assets_")[-1])
    return dst


def summary(model_dir: Path | None, num_models: int, seconds: float, n: int) -> dict:
    import pycolmap

    if model_dir is None:
        return {"registered": 0, "images": n, "points": 0, "reproj_px": float("nan"), "track": float("nan"),
                "models": num_models, "focal_px": [], "seconds": seconds}
    rec = pycolmap.Reconstruction(model_dir)
    return {"registered": rec.num_reg_images(), "images": n, "points": rec.num_points3D(),
            "reproj_px": rec.compute_mean_reprojection_error(), "track": rec.compute_mean_track_length(),
            "models": num_models, "focal_px": sorted(round(float(c.params[0]), 1) for c in rec.cameras.values()),
            "seconds": seconds}


def pose_accuracy(model_dir: Path | None, cameras: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """Every pair of the scene's images scored against its true ``cameras`` (:func:`loftr.eval.posed.read_cameras`):
    pose AUC@5/10/20 (percent) of max(rotation error, translation-direction error), failed (inf) where an image is not
    registered; and the mean relative error (percent) of the focal lengths found against the true mean focal length."""
    import pycolmap

    from loftr.geometry import angle_error_rotation, angle_error_translation, pose_auc

    found: dict[str, np.ndarray] = {}
    focal_err: list[float] = []
    if model_dir is not None:
        rec = pycolmap.Reconstruction(model_dir)
        for image in rec.images.values():
            if image.name not in cameras:
                continue
            pose = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
            T = np.eye(4)
            T[:3, :3], T[:3, 3] = pose.rotation.matrix(), np.asarray(pose.translation)
            found[image.name] = T
            K = cameras[image.name][0]
            f_true = (K[0, 0] + K[1, 1]) / 2
            focal_err.append(abs(float(rec.cameras[image.camera_id].mean_focal_length()) - f_true) / f_true * 100)
    names = sorted(cameras)
    errors = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if a not in found or b not in found:
                errors.append(np.inf)
                continue
            gt = cameras[b][1] @ np.linalg.inv(cameras[a][1])
            est = found[b] @ np.linalg.inv(found[a])
            errors.append(max(angle_error_rotation(est[:3, :3], gt[:3, :3]),
                              angle_error_translation(est[:3, 3], gt[:3, 3])))
    auc = pose_auc(errors)
    return {"pose_auc": [round(100 * auc[t], 1) for t in (5, 10, 20)], "pairs": len(errors), "errors": errors,
            "focal_err_pct": float(np.mean(focal_err)) if focal_err else float("nan")}


def pycolmap_missing() -> bool:
    """True (after saying so) when pycolmap is not installed: the benchmark is then skipped."""
    try:
        import pycolmap  # noqa: F401
    except ImportError:
        print("skipped: pycolmap is not installed (pip install -e '.[pipeline]')")
        return True
    return False


def largest(sparse: Path) -> tuple[Path | None, int]:
    """The model folder with most registered images under ``sparse`` and the number of models there."""
    import pycolmap

    dirs = [d for d in sorted(sparse.iterdir()) if d.is_dir()] if sparse.is_dir() else []
    if not dirs:
        return None, 0
    return max(dirs, key=lambda d: pycolmap.Reconstruction(d).num_reg_images()), len(dirs)


def run_loftr(images: Path, out: Path, device: str, extra: list[str] = ()) -> dict:
    cmd = [sys.executable, "-m", "loftr.cli", "sfm", str(images), "--out", str(out), "--no-progress", *extra]
    if device != "cpu":
        cmd += ["--device", device]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    print("$ loftr " + shlex.join(cmd[3:]), file=sys.stderr)
    print((proc.stdout + proc.stderr).strip()[-2000:], file=sys.stderr)
    model, count = largest(out / "sparse")
    return summary(model, count, seconds, len(list(images.iterdir())))


def run_sift(images: Path, out: Path, single_camera: bool) -> dict:
    import pycolmap

    out.mkdir(parents=True, exist_ok=True)
    db = out / "database.db"
    t = time.perf_counter()
    mode = pycolmap.CameraMode.SINGLE if single_camera else pycolmap.CameraMode.AUTO
    pycolmap.extract_features(db, images, camera_mode=mode, device=pycolmap.Device.cpu)
    pycolmap.match_exhaustive(db, device=pycolmap.Device.cpu)
    models = pycolmap.incremental_mapping(db, images, out / "sparse")
    seconds = time.perf_counter() - t
    model, count = largest(out / "sparse")
    return {**summary(model, count, seconds, len(list(images.iterdir()))), "models": len(models)}


def sift_refined(model_dir: Path | None, out: Path, sift: dict) -> dict:
    """The SIFT model after `loftr sfm`'s final bundle adjustment with the principal point refined
    (:func:`loftr.pipeline.colmap.refine_principal_points`; kept as it was where the images do not determine the
    point): what that step gives without LoFTR's matches. Written to ``out/0``."""
    import pycolmap

    from loftr.pipeline.colmap import refine_principal_points

    if model_dir is None:
        return dict(sift)
    rec = pycolmap.Reconstruction(model_dir)
    t = time.perf_counter()
    refined = refine_principal_points(rec)
    rec = rec if refined is None else refined
    (out / "0").mkdir(parents=True, exist_ok=True)
    rec.write(out / "0")
    return summary(out / "0", sift["models"], sift["seconds"] + time.perf_counter() - t, sift["images"])


def table(rows: dict[str, dict]) -> str:
    posed = all("pose_auc" in r for r in rows.values())
    extra = " pose AUC@5/10/20 (all pairs) | focal error |" if posed else ""
    lines = ["| pipeline | registered | points | mean reproj. error | mean track | models | focal (px) | time |" + extra,
             "|---|---|---|---|---|---|---|---|" + ("---|---|" if posed else "")]
    for name, r in rows.items():
        f = r["focal_px"]
        focal = f"{f[0]:.0f}-{f[-1]:.0f} ({len(f)} cameras)" if len(f) > 3 else ", ".join(f"{v:.0f}" for v in f)
        line = (f"| {name} | {r['registered']}/{r['images']} | {r['points']} | {r['reproj_px']:.2f} px | "
                f"{r['track']:.2f} | {r['models']} | {focal or '-'} | {r['seconds']:.0f} s |")
        if posed:
            line += f" {' / '.join(f'{v:.1f}' for v in r['pose_auc'])} | {r['focal_err_pct']:.1f} % |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, default=PHOTOS, help="folder holding the kitti_0001* frames")
    ap.add_argument("--device", default="cpu", help="device of the LoFTR matching (default cpu)")
    ap.add_argument("--no-sift", action="store_true", help="only loftr")
    ap.add_argument("--check", action="store_true", help="exit 1 unless loftr registers >= 18/20, error < 1.5 px")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--scene", type=Path, help="a posed scene (images/, cameras.json) instead of the KITTI frames: "
                                               "also scores the cameras found against the true ones")
    ap.add_argument("--loftr-args", default="", help="more options of `loftr sfm`, e.g. \"--max-std 0\"")
    ap.add_argument("--true-camera", action="store_true", help="with --scene: also loftr given the true intrinsics")
    ap.add_argument("--step", type=int, default=1, help="with --scene: every STEP-th view only (the release gate's "
                                                        "fox: --step 2)")
    args = ap.parse_args(argv)
    args.extra = shlex.split(args.loftr_args)
    args.label = "loftr sfm (defaults" + (f", {args.loftr_args}" if args.extra else "") + ")"
    if args.scene is not None:
        return posed_scene(args)
    src = frames(args.photos) if args.photos.is_dir() else []
    if len(src) != 20:
        print(f"skipped: the 20 {PATTERN} frames are not in {args.photos} (found {len(src)})")
        return 0
    if pycolmap_missing():
        return 0
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_sfm_") as tmp:
        images = copy_frames(src, Path(tmp) / "images")
        rows[args.label] = run_loftr(images, Path(tmp) / "loftr", args.device, args.extra)
        if not args.no_sift:
            rows["pycolmap SIFT (defaults, exhaustive)"] = run_sift(images, Path(tmp) / "sift", False)
            rows["pycolmap SIFT (one shared camera)"] = run_sift(images, Path(tmp) / "sift1", True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.check:
        r = rows[args.label]
        ok = r["registered"] >= 18 and r["reproj_px"] < 1.5
        print(f"check: {'pass' if ok else 'FAIL'} (need >= 18/20 registered, mean reprojection error < 1.5 px)")
        return 0 if ok else 1
    return 0


def posed_scene(args: argparse.Namespace) -> int:
    """The ``--scene`` mode: both pipelines on a posed scene's images, scored against its true cameras."""
    images = args.scene / "images"
    if not images.is_dir() or not (args.scene / "cameras.json").is_file():
        print(f"skipped: {args.scene} has no images/ and cameras.json")
        return 0
    if pycolmap_missing():
        return 0
    from loftr.eval.posed import read_cameras

    cameras = read_cameras(args.scene)
    if args.step < 1:
        print(f"error: --step must be at least 1, got {args.step}", file=sys.stderr)
        return 2
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_sfm_") as tmp:
        if args.step > 1:  # the chosen views in a folder of their own, scored against their cameras only
            cameras = {n: cameras[n] for n in sorted(cameras)[::args.step]}
            images = Path(tmp) / "images"
            images.mkdir()
            for n in cameras:
                shutil.copy(args.scene / "images" / n, images / n)
        rows[args.label] = run_loftr(images, Path(tmp) / "loftr", args.device, args.extra)
        rows[args.label].update(pose_accuracy(largest(Path(tmp) / "loftr" / "sparse")[0], cameras))
        if args.true_camera:
            K = np.mean([k for k, _ in cameras.values()], axis=0)
            known = ["--camera", "PINHOLE", f"{K[0, 0]:.3f},{K[1, 1]:.3f},{K[0, 2]:.3f},{K[1, 2]:.3f}"]
            label = args.label[:-1] + ", --camera true K held fixed)"
            rows[label] = run_loftr(images, Path(tmp) / "loftr_k", args.device, args.extra + known)
            rows[label].update(pose_accuracy(largest(Path(tmp) / "loftr_k" / "sparse")[0], cameras))
        if not args.no_sift:
            for name, single in (("pycolmap SIFT (defaults, exhaustive)", False),
                                 ("pycolmap SIFT (one shared camera)", True)):
                out = Path(tmp) / ("sift1" if single else "sift")
                rows[name] = run_sift(images, out, single)
                rows[name].update(pose_accuracy(largest(out / "sparse")[0], cameras))
            name = "pycolmap SIFT (one shared camera), principal point refined as loftr sfm does"
            rows[name] = sift_refined(largest(Path(tmp) / "sift1" / "sparse")[0], Path(tmp) / "sift1_pp",
                                      rows["pycolmap SIFT (one shared camera)"])
            rows[name].update(pose_accuracy(largest(Path(tmp) / "sift1_pp")[0], cameras))
    step = f", one view in {args.step}" if args.step > 1 else ""
    print(f"{args.scene.name}{step}: {len(cameras)} images with true cameras")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
