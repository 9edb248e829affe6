"""Copy posed training scenes (``../shared/data/posed_train``) at a training size, so they travel to a device machine
with the packed photos (64 MiB in all): ``python scripts/pack_posed.py SRC DST [--longest 768] [--holdout cup-table]``.

Each kept scene gets its images as colour JPEGs of at most ``--longest`` px (the posed source needs about the network
width times its largest zoom, 1.8: 691 px at 384x288, 922 px at 512x384), ``cameras.json`` with K scaled to them,
``points.npz`` with the track observations scaled the same way (pixel centres at integers), ``pairs.txt`` and
``source.json`` as they are. Held-out scenes (default cup-table, which the release gate evaluates on) are not
copied at all.

``--teacher CACHES --teacher-out FILE``: the teacher caches of posed pairs (``loftr teacher-cache SCENE/images --pairs
SCENE/pairs.txt --cameras SCENE/cameras.json``, names relative to ``--teacher-root``, the photo folder training
used) are written again for the packed scenes: keypoints scaled like the tracks, names relative to
``--teacher-relative-to`` (the packed photo folder the device trains with; default DST/../photos); pairs of scenes
that were not packed are left out."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from loftr.train.posed import DEFAULT_HOLDOUT, SCENE_FILES, scene_folders
from loftr.train.teacher import TeacherCache


def _scale(longest: int, shape: tuple[int, ...]) -> float:
    return min(1.0, longest / max(shape[:2]))


def pack_scene(src: Path, dst: Path, longest: int = 768, quality: int = 90) -> dict[str, tuple[float, float]]:
    """Writes one scene at most ``longest`` px; returns {image name: (x, y) written pixels per original pixel}."""
    missing = [f for f in SCENE_FILES if not (src / f).is_file()]
    if missing:
        raise SystemExit(f"{src} is not a posed training scene: no {', '.join(missing)}")
    (dst / "images").mkdir(parents=True, exist_ok=True)
    cameras = json.loads((src / "cameras.json").read_text())
    factors: dict[str, tuple[float, float]] = {}  # (x, y) written pixels per original pixel
    for name in cameras:
        img = cv2.imread(str(src / "images" / name), cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"cannot read image {src / 'images' / name}")
        h, w = img.shape[:2]
        f = _scale(longest, img.shape)
        if f < 1:
            img = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        fx, fy = img.shape[1] / w, img.shape[0] / h
        cv2.imwrite(str(dst / "images" / name), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        factors[name] = (fx, fy)
        S = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])
        cameras[name] = dict(cameras[name], K=(S @ np.asarray(cameras[name]["K"], np.float64)).tolist())
    (dst / "cameras.json").write_text(json.dumps(cameras))
    with np.load(src / "points.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    f = np.array([factors.get(str(n), (1.0, 1.0)) for n in arrays["names"]])[arrays["image"]]
    arrays["xy"] = ((arrays["xy"] + 0.5) * f - 0.5).astype(np.float32)
    np.savez_compressed(dst / "points.npz", **arrays)
    for name in ("pairs.txt", "source.json"):
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)
    return factors


def pack_teacher(cache: TeacherCache, root: Path, packed: dict[Path, tuple[Path, dict[str, tuple[float, float]]]],
                 relative_to: Path) -> TeacherCache:
    """``cache`` (names relative to ``root``) for the packed scenes: ``packed`` maps a source scene folder to its
    packed folder and the scale factors of its images. Pairs outside the packed scenes are dropped."""
    where = {(src / "images").resolve(): (dst, f) for src, (dst, f) in packed.items()}
    names, sizes, kpts0, kpts1 = [], [], [], []
    for (n0, n1), wh, k0, k1 in zip(cache.names, cache.sizes, cache.kpts0, cache.kpts1):
        p0, p1 = (root / n0).resolve(), (root / n1).resolve()
        if p0.parent not in where or p1.parent != p0.parent or p0.name not in where[p0.parent][1] \
                or p1.name not in where[p0.parent][1]:
            continue
        dst, factors = where[p0.parent]
        f0, f1 = np.array(factors[p0.name]), np.array(factors[p1.name])
        names.append(tuple(Path(os.path.relpath(dst / "images" / p.name, relative_to)).as_posix() for p in (p0, p1)))
        sizes.append([np.round(wh[0] * f0), np.round(wh[1] * f1)])
        kpts0.append((k0 + 0.5) * f0 - 0.5)
        kpts1.append((k1 + 0.5) * f1 - 0.5)
    return TeacherCache(names, np.array(sizes, np.int64).reshape(-1, 2, 2), kpts0, kpts1, cache.teacher)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="folder of posed training scenes")
    parser.add_argument("dst", type=Path, help="where to write the packed scenes")
    parser.add_argument("--longest", type=int, default=768, help="longest image side (default 768)")
    parser.add_argument("--holdout", default=",".join(DEFAULT_HOLDOUT), help="scene names not to copy")
    parser.add_argument("--teacher", help="teacher caches of posed pairs (comma-separated) to write for the packed "
                        "scenes")
    parser.add_argument("--teacher-root", type=Path, default=Path("../shared/data/photos"),
                        help="the folder the caches' names are relative to (default ../shared/data/photos)")
    parser.add_argument("--teacher-out", type=Path, help="the packed cache to write (default DST/../posed_teacher.npz)")
    parser.add_argument("--teacher-relative-to", type=Path, help="the packed photo folder (default DST/../photos)")
    args = parser.parse_args()
    packed = {}
    for scene in scene_folders(args.src, args.holdout.split(",")):
        factors = pack_scene(scene, args.dst / scene.name, args.longest)
        packed[scene] = (args.dst / scene.name, factors)
        print(f"{scene.name}: {len(factors)} images written to {args.dst / scene.name}")
    if args.teacher:
        cache = pack_teacher(TeacherCache.load_all(args.teacher), args.teacher_root, packed,
                             args.teacher_relative_to or args.dst.parent / "photos")
        out = cache.save(args.teacher_out or args.dst.parent / "posed_teacher.npz")
        print(f"{out}: {len(cache)} teacher pairs of the packed scenes")


if __name__ == "__main__":
    main()
