"""Copy a photo folder as JPEGs of at most 1024 px (the texture cache of the scene generator never uses more), so the
training photos fit in what travels to a device machine: ``python scripts/pack_textures.py SRC DST``."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2

from loftr.train.data import list_images


def pack(src: Path, dst: Path, longest: int = 1024, quality: int = 92) -> int:
    dst.mkdir(parents=True, exist_ok=True)
    n = 0
    for k, path in enumerate(list_images(src)):
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            continue
        f = longest / max(img.shape)
        if f < 1:
            img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        # keep the sort order of the source (the held-out split takes every k-th photo)
        cv2.imwrite(str(dst / f"{k:04d}_{path.stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        n += 1
    return n


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(f"{pack(Path(sys.argv[1]), Path(sys.argv[2]))} photos written to {sys.argv[2]}")
