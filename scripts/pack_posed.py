"""Copy posed training scenes (``../shared/data/posed_train``) at a training size, so they travel to a device machine
with the packed photos (64 MiB in all): ``python scripts/pack_posed.py SRC DST [--longest 768] [--holdout cup-table]``.

Each kept scene gets its images as colour JPEGs of at most ``--longest`` px (the posed source needs about the network
width times its largest zoom, 1.8: 691 px at 384x288, 922 px at 512x384), ``cameras.json`` with K scaled to them,
``points.npz`` with the track observations scaled the same way (pixel centres at integers), ``pairs.txt`` and
``source.json`` as they are. Held-out scenes (default cup-table, which the release gate evaluates on) are not
copied at all."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np

from loftr.train.posed import DEFAULT_HOLDOUT, SCENE_FILES, scene_folders


def _scale(longest: int, shape: tuple[int, ...]) -> float:
    return min(1.0, longest / max(shape[:2]))


def pack_scene(src: Path, dst: Path, longest: int = 768, quality: int = 90) -> int:
    """Writes one scene at most ``longest`` px; returns the number of images written."""
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
    return len(factors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="folder of posed training scenes")
    parser.add_argument("dst", type=Path, help="where to write the packed scenes")
    parser.add_argument("--longest", type=int, default=768, help="longest image side (default 768)")
    parser.add_argument("--holdout", default=",".join(DEFAULT_HOLDOUT), help="scene names not to copy")
    args = parser.parse_args()
    for scene in scene_folders(args.src, args.holdout.split(",")):
        n = pack_scene(scene, args.dst / scene.name, args.longest)
        print(f"{scene.name}: {n} images written to {args.dst / scene.name}")


if __name__ == "__main__":
    main()
