"""Which pairs does `loftr sfm` verify, and which of them are wrong? One set of matches of a posed scene, mapped
with several pair lists and inlier-ratio thresholds, scored against the true cameras.

Matches every pair of the scene once (``loftr match-pairs --exhaustive``, or ``--matches`` a final file made so),
then per variant (pairs ``exh`` or ``seqN``, verification's fewest inliers per match): the COLMAP database and
verification of :func:`loftr.pipeline.colmap.sfm_from_matches`, each verified pair's inliers checked against the
fundamental matrix of the true cameras (a pair whose inliers lie a median of over 5 px from the true epipolar
lines is a wrong pair), then the mapping, scored as bench_sfm scores it (pose AUC@5/10/20 of all image pairs).
Prints one markdown table; the inlier ratios (inliers / matches) of the true and the wrong pairs say where a
threshold separates them.

    python benchmarks/sfm_pairs_probe.py ../shared/data/posed/castle-P19 [--matches m.h5] [--ratios 0 0.5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sfm import pose_accuracy  # noqa: E402


def fundamental(cameras: dict, a: str, b: str) -> np.ndarray:
    """F with x_b^T F x_a = 0 from the true cameras (K, 4x4 world-to-camera) of images a and b."""
    from loftr.geometry import fundamental_from_pose

    (Ka, Ta), (Kb, Tb) = cameras[a], cameras[b]
    T = Tb @ np.linalg.inv(Ta)
    return fundamental_from_pose(T[:3, :3], T[:3, 3], Ka, Kb)


def verified_pairs(db_path: Path, cameras: dict) -> list[tuple[str, str, int, float, float]]:
    """(name0, name1, inliers, inliers / matches, median distance of the inliers to the true epipolar lines (px))
    of every verified pair of a database."""
    import pycolmap

    db = pycolmap.Database.open(db_path)
    try:
        names = {im.image_id: im.name for im in db.read_all_images()}
        kpts = {i: db.read_keypoints(i)[:, :2] - 0.5 for i in names}  # COLMAP's pixel centres at +0.5
        out = []
        for pair_id, g in zip(*db.read_two_view_geometries()):
            m = g.inlier_matches
            if len(m) == 0:
                continue
            i, j = pycolmap.pair_id_to_image_pair(pair_id)
            x0 = np.c_[kpts[i][m[:, 0]], np.ones(len(m))]
            x1 = np.c_[kpts[j][m[:, 1]], np.ones(len(m))]
            lines = x0 @ fundamental(cameras, names[i], names[j]).T
            dist = np.abs((lines * x1).sum(1)) / np.linalg.norm(lines[:, :2], axis=1)
            out.append((names[i], names[j], len(m), len(m) / len(db.read_matches(i, j)), float(np.median(dist))))
        return out
    finally:
        db.close()


def merge_moves(results) -> tuple[float, float]:
    """(share of raw observations the per-image keypoint merge moves, their mean move in original px): each raw
    keypoint against the nearest merged keypoint of its image (its cell's, at the default grid)."""
    from scipy.spatial import cKDTree

    from loftr.pipeline.h5 import DEFAULT_QUANTIZE, merge_keypoints

    merged = merge_keypoints(results, DEFAULT_QUANTIZE).keypoints
    trees = {name: cKDTree(k) for name, k in merged.items()}
    d = np.concatenate([trees[name].query(k)[0] for r in results
                        for name, k in ((r.name0, r.keypoints0), (r.name1, r.keypoints1)) if len(k)])
    moved = d > 1e-3
    return float(moved.mean()), float(d[moved].mean()) if moved.any() else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scene", type=Path, help="a posed scene: images/ and cameras.json")
    ap.add_argument("--matches", type=Path, help="a final match-pairs file of the scene's exhaustive pairs")
    ap.add_argument("--pairs", nargs="+", default=["seq5", "exh"], help="pair lists: exh, seqN (default seq5 exh)")
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.0, 0.5], help="fewest inliers per match")
    args = ap.parse_args(argv)
    try:
        import pycolmap  # noqa: F401
    except ImportError:
        print("skipped: pycolmap is not installed")
        return 0
    if not (args.scene / "cameras.json").is_file():
        print(f"skipped: {args.scene} has no cameras.json")
        return 0
    from loftr.eval.posed import read_cameras
    from loftr.pipeline.colmap import sfm_from_matches
    from loftr.pipeline.h5 import read_raw, read_settings, write_final
    from loftr.pipeline.pairs import exhaustive_pairs, list_images, sequential_pairs

    cameras = read_cameras(args.scene)
    images = args.scene / "images"
    names = list_images(images)
    rows = ["| pairs | min inlier ratio | verified | wrong | inlier ratio true / wrong pairs (min-max) | registered "
            "| mean reproj. error | pose AUC@5/10/20 |", "|---|---|---|---|---|---|---|---|"]
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sfm_pairs_probe_") as tmp:
        matches = args.matches
        if matches is None:
            matches = Path(tmp) / "matches.h5"
            subprocess.run([sys.executable, "-m", "loftr.cli", "match-pairs", str(images), "--exhaustive", "--out",
                            str(matches), "--no-progress"], check=True)
        raw = read_raw(matches)
        for which in args.pairs:
            pairs = exhaustive_pairs(names) if which == "exh" else sequential_pairs(names, int(which[3:]))
            sub = Path(tmp) / f"{which}.h5"
            chosen = {f"{a}/{b}": raw[f"{a}/{b}"] for a, b in pairs}
            write_final(sub, chosen, read_settings(matches), 1.0)
            share, move = merge_moves(list(chosen.values()))
            notes.append(f"{which}: the keypoint merge moves {100 * share:.1f} % of the raw keypoints, by "
                         f"{move:.2f} px on average (original pixels)")
            for ratio in args.ratios:
                out = Path(tmp) / f"{which}_{ratio}"
                r = sfm_from_matches(sub, images, pairs, out, num_threads=1, min_inlier_ratio=ratio)
                ver = verified_pairs(out / "database.db", cameras)
                good = [v[3] for v in ver if v[4] <= 5.0]
                bad = [v[3] for v in ver if v[4] > 5.0]
                span = " / ".join(f"{min(x):.2f}-{max(x):.2f}" if x else "-" for x in (good, bad))
                auc = pose_accuracy(r.model_dir, cameras)["pose_auc"]
                rows.append(f"| {which} ({len(pairs)}) | {ratio:g} | {len(ver)} | {len(bad)} | {span} | "
                            f"{r.num_registered}/{r.num_images} | {r.mean_reprojection_error:.2f} px | "
                            f"{' / '.join(f'{v:.1f}' for v in auc)} |")
                print(rows[-1], file=sys.stderr)
    print(f"{args.scene.name}: {len(names)} images")
    print("\n".join(rows))
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
