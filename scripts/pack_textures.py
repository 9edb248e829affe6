"""Copy a photo folder as JPEGs of at most 1024 px (the texture cache of the scene generator never uses more), so the
training photos fit in what travels to a device machine: ``python scripts/pack_textures.py SRC DST [TEACHER]``.

With TEACHER, one or more caches of ``loftr teacher-cache`` (comma-separated; names relative to SRC), their copy
naming the packed photos is written beside DST as ``teacher.npz`` (the keypoints stay in original pixels: the cache
keeps the original sizes). Teacher photos outside SRC (a posed scene's, named ``../posed/...``) are packed beside DST
in ``teacher_photos/``, which the photo folder does not list: they train as teacher pairs only, never as textures."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2

from loftr.train.data import list_images


def _copy(path: Path, out: Path, longest: int, quality: int) -> bool:
    """Write ``path`` as a grey JPEG of at most ``longest`` px at ``out``; False when it is not a readable image."""
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        return False
    f = longest / max(img.shape)
    if f < 1:
        img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    out.parent.mkdir(parents=True, exist_ok=True)
    return bool(cv2.imwrite(str(out), img, [cv2.IMWRITE_JPEG_QUALITY, quality]))


def pack(src: Path, dst: Path, longest: int = 1024, quality: int = 92) -> dict[str, str]:
    """Writes the copies; returns {name under src: name under dst} of the photos written."""
    dst.mkdir(parents=True, exist_ok=True)
    names = {}
    for k, path in enumerate(list_images(src)):
        # keep the sort order of the source (the held-out split takes every k-th photo)
        if _copy(path, dst / f"{k:04d}_{path.stem}.jpg", longest, quality):
            names[path.relative_to(src).as_posix()] = f"{k:04d}_{path.stem}.jpg"
    return names


def pack_outside(src: Path, dst: Path, cache_names: list[tuple[str, str]], longest: int = 1024,
                 quality: int = 92) -> dict[str, str]:
    """Copies of the cache's photos that are not under ``src`` (names starting ``../``) into ``dst/../teacher_photos``;
    returns {cache name: name relative to dst}."""
    names: dict[str, str] = {}
    for name in sorted({n for pair in cache_names for n in pair if n.startswith("../")}):
        flat = name.replace("../", "").replace("/", "_").rsplit(".", 1)[0] + ".jpg"
        if _copy(src / name, dst.parent / "teacher_photos" / flat, longest, quality):
            names[name] = f"../teacher_photos/{flat}"
    return names


def rename_cache(cache: "TeacherCache | Path | str", names: dict[str, str], out: Path) -> int:
    """Write a teacher cache whose photo names are the packed ones (pairs of photos not packed are left out);
    ``cache`` a cache, or the path of one or several (comma-separated)."""
    from loftr.train.teacher import TeacherCache

    cache = cache if isinstance(cache, TeacherCache) else TeacherCache.load_all(cache)
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
        from loftr.train.teacher import TeacherCache

        out = Path(sys.argv[2]).parent / "teacher.npz"
        cache = TeacherCache.load_all(sys.argv[3])
        outside = pack_outside(Path(sys.argv[1]), Path(sys.argv[2]), cache.names)
        print(f"{len(outside)} teacher-only photos written to {out.parent / 'teacher_photos'}")
        print(f"{rename_cache(cache, written | outside, out)} teacher pairs written to {out}")
