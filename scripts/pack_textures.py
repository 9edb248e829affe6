"""Copy a photo folder as JPEGs of at most 1024 px (the texture cache of the scene generator never uses more), so the
training photos fit in what travels to a device machine: ``python scripts/pack_textures.py SRC DST [TEACHER]``.

With TEACHER, a cache of ``loftr teacher-cache SRC``, its copy naming the packed photos is written beside DST as
``teacher.npz`` (the keypoints stay in original pixels: the cache keeps the original sizes)."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2

from loftr.train.data import list_images


def pack(src: Path, dst: Path, longest: int = 1024, quality: int = 92) -> dict[str, str]:
    """Writes the copies; returns {name under src: name under dst} of the photos written."""
    dst.mkdir(parents=True, exist_ok=True)
    names = {}
    for k, path in enumerate(list_images(src)):
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            continue
        f = longest / max(img.shape)
        if f < 1:
            img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        # keep the sort order of the source (the held-out split takes every k-th photo)
        cv2.imwrite(str(dst / f"{k:04d}_{path.stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        names[path.relative_to(src).as_posix()] = f"{k:04d}_{path.stem}.jpg"
    return names


def rename_cache(cache_path: Path, names: dict[str, str], out: Path) -> int:
    """Write a teacher cache whose photo names are the packed ones (pairs of photos not packed are left out)."""
    from loftr.train.teacher import TeacherCache

    cache = TeacherCache.load(cache_path)
    keep = [k for k, (a, b) in enumerate(cache.names) if a in names and b in names]
    TeacherCache([(names[cache.names[k][0]], names[cache.names[k][1]]) for k in keep], cache.sizes[keep],
                 [cache.kpts0[k] for k in keep], [cache.kpts1[k] for k in keep], cache.teacher).save(out)
    return len(keep)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    written = pack(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"{len(written)} photos written to {sys.argv[2]}")
    if len(sys.argv) == 4:
        out = Path(sys.argv[2]).parent / "teacher.npz"
        print(f"{rename_cache(Path(sys.argv[3]), written, out)} teacher pairs written to {out}")
