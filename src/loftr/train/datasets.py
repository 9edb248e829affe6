"""Training pairs with depth and poses, read from ScanNet and MegaDepth in the official LoFTR index formats.

* **ScanNet** — index ``.npz`` files with ``name`` (N, 4) int rows ``[scene_id, sub_scene_id, stem0, stem1]`` and
  (optional) ``score`` (N,) overlap scores; ``intrinsics.npz`` maps a scene name (``scene0000_00``) to its (3, 3)
  depth-camera matrix; under the data root, ``scene0000_00/color/{stem}.jpg``, ``depth/{stem}.png`` (uint16
  millimetres, 0 = unknown) and ``pose/{stem}.txt`` (4×4 camera-to-world). Images are resized to the network size
  (640×480 in the reference); depth and intrinsics stay in their own pixels, related by ``scale``.
* **MegaDepth** — scene-info ``.npz`` files (pickled object arrays: open only files you trust) with
  ``image_paths``, ``depth_paths`` (``.h5`` with a ``depth`` dataset, metres), ``intrinsics`` (3, 3), ``poses``
  (4×4 world-to-camera) and ``pair_infos`` (``((idx0, idx1), overlap_score, central_matches)``), paths relative to
  the data root. Images are resized to a longest side (640 in the reference training, a multiple of 8) and zero-padded
  bottom-right to a square, with masks of the valid pixels; depth and intrinsics stay at the original resolution.

An index is one ``.npz`` file, a folder of them, or a ``.txt`` list of their names (one per line, ``.npz``
optional, relative to the list's folder), as the reference's ``TRAIN_NPZ_ROOT`` + ``TRAIN_LIST_PATH``.
Pairs with an overlap score not above ``min_overlap`` are dropped (the reference: 0.4 for ScanNet, 0.0 for
MegaDepth).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

SCANNET_MIN_OVERLAP = 0.4
MEGADEPTH_MIN_OVERLAP = 0.0


@dataclass(frozen=True)
class DepthPairSample:
    """One pair (or a batch: a leading N on every field) with depth ground truth.

    ``scale0``/``scale1`` (x, y): pixels of the depth map and intrinsics per network pixel; ``mask0``/``mask1`` valid
    (unpadded) network pixels, or None when nothing is padded. Depth maps of a batch are zero-padded to the largest.
    """

    image0: torch.Tensor  # (1, H, W) float in [0, 1]
    image1: torch.Tensor
    depth0: torch.Tensor  # (h0, w0) float metres, 0 = unknown
    depth1: torch.Tensor
    K0: torch.Tensor  # (3, 3) float64
    K1: torch.Tensor
    T_0to1: torch.Tensor  # (4, 4) float64, camera 0 → camera 1
    scale0: torch.Tensor  # (2,) float64
    scale1: torch.Tensor
    mask0: torch.Tensor | None = None  # (H, W) bool
    mask1: torch.Tensor | None = None
    fine: bool = True  # whether its sub-pixel targets train the fine stage (False: the coarse matching only)


def _pad_to(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2]))


def collate_depth(samples: list[DepthPairSample]) -> DepthPairSample:
    """Stack samples; depth maps are zero-padded bottom-right to the largest of the batch."""
    h = max(max(s.depth0.shape[0], s.depth1.shape[0]) for s in samples)
    w = max(max(s.depth0.shape[1], s.depth1.shape[1]) for s in samples)
    fields = {}
    for name in ("image0", "image1", "K0", "K1", "T_0to1", "scale0", "scale1"):
        fields[name] = torch.stack([getattr(s, name) for s in samples])
    for name in ("depth0", "depth1"):
        fields[name] = torch.stack([_pad_to(getattr(s, name), h, w) for s in samples])
    for name in ("mask0", "mask1"):
        masks = [getattr(s, name) for s in samples]
        if all(m is None for m in masks):
            fields[name] = None
        else:
            fields[name] = torch.stack([m if m is not None else torch.ones(s.image0.shape[-2:], dtype=torch.bool)
                                        for m, s in zip(masks, samples)])
    fields["fine"] = all(s.fine for s in samples)
    return DepthPairSample(**fields)


def index_files(index: str | Path) -> list[Path]:
    """The ``.npz`` files of an index: one file, a folder of them, or a ``.txt`` list of names."""
    index = Path(index)
    if index.is_dir():
        files = sorted(index.glob("*.npz"))
        files = [f for f in files if f.name != "intrinsics.npz"]
        if not files:
            raise FileNotFoundError(f"no .npz index files in {index}")
        return files
    if not index.is_file():
        raise FileNotFoundError(f"index {index} does not exist")
    if index.suffix == ".npz":
        return [index]
    names = [line.split()[0] for line in index.read_text().splitlines() if line.strip()]
    files = [index.parent / (n if n.endswith(".npz") else n + ".npz") for n in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} index files of {index} do not exist, e.g. {missing[0]}")
    if not files:
        raise FileNotFoundError(f"index list {index} names no files")
    return files


def _read_grey(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return img


def _relative_pose(w2c0: np.ndarray, w2c1: np.ndarray) -> np.ndarray:
    """T_0to1 from two world-to-camera poses."""
    return w2c1 @ np.linalg.inv(w2c0)


class ScanNetPairs(Dataset):
    """ScanNet pairs in the official index format (see the module docstring); ``size`` (W, H) of the network input.

    ``intrinsics`` defaults to an ``intrinsics.npz`` found next to the index or up to two folders above it (the
    reference keeps ``index/intrinsics.npz`` beside ``index/scene_data/train/``)."""

    def __init__(self, root: str | Path, index: str | Path, intrinsics: str | Path | None = None,
                 size: tuple[int, int] = (640, 480), min_overlap: float = SCANNET_MIN_OVERLAP) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"ScanNet root {self.root} does not exist")
        files = index_files(index)
        self.size = (int(size[0]), int(size[1]))
        path = Path(intrinsics) if intrinsics else self._find_intrinsics(Path(index))
        with np.load(path) as data:
            self.intrinsics = {k: np.asarray(data[k], dtype=np.float64).reshape(3, 3) for k in data.files}
        pairs: list[tuple[str, str, str]] = []
        for f in files:
            with np.load(f) as data:
                names = np.asarray(data["name"])
                if "score" in data.files:
                    names = names[np.asarray(data["score"]) > min_overlap]
            for scene, sub, stem0, stem1 in names.tolist():
                pairs.append((f"scene{int(scene):04d}_{int(sub):02d}", str(stem0), str(stem1)))
        unknown = sorted({p[0] for p in pairs} - set(self.intrinsics))
        if unknown:
            raise KeyError(f"{path} has no intrinsics for {', '.join(unknown[:5])}")
        self.pairs = pairs

    @staticmethod
    def _find_intrinsics(index: Path) -> Path:
        start = index if index.is_dir() else index.parent
        for folder in (start, start.parent, start.parent.parent):
            if (folder / "intrinsics.npz").is_file():
                return folder / "intrinsics.npz"
        raise FileNotFoundError(f"no intrinsics.npz next to or above {index}; give it explicitly")

    def __len__(self) -> int:
        return len(self.pairs)

    def _view(self, scene: str, stem: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, torch.Tensor]:
        folder = self.root / scene
        colour = folder / "color" / f"{stem}.jpg"
        if not colour.exists() and (folder / "color" / f"{stem}.png").exists():
            colour = folder / "color" / f"{stem}.png"
        img = cv2.resize(_read_grey(colour), self.size, interpolation=cv2.INTER_AREA)
        depth = cv2.imread(str(folder / "depth" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        if depth is None:
            raise FileNotFoundError(f"cannot read depth {folder / 'depth' / f'{stem}.png'}")
        depth = torch.from_numpy(depth.astype(np.float32) / 1000.0)
        cam_to_world = np.loadtxt(folder / "pose" / f"{stem}.txt").reshape(4, 4)
        if not np.isfinite(cam_to_world).all():  # ScanNet marks failed tracking with inf poses: no ground truth
            cam_to_world, depth = np.eye(4), torch.zeros_like(depth)
        scale = torch.tensor([depth.shape[1] / self.size[0], depth.shape[0] / self.size[1]], dtype=torch.float64)
        image = torch.from_numpy(img.astype(np.float32) / 255.0)[None]
        return image, depth, np.linalg.inv(cam_to_world), scale

    def __getitem__(self, index: int) -> DepthPairSample:
        scene, stem0, stem1 = self.pairs[index]
        image0, depth0, w2c0, scale0 = self._view(scene, stem0)
        image1, depth1, w2c1, scale1 = self._view(scene, stem1)
        K = torch.from_numpy(self.intrinsics[scene].copy())
        T = torch.from_numpy(_relative_pose(w2c0, w2c1))
        return DepthPairSample(image0, image1, depth0, depth1, K, K.clone(), T, scale0, scale1)

    @staticmethod
    def collate(samples: list[DepthPairSample]) -> DepthPairSample:
        return collate_depth(samples)


def read_h5_depth(path: str | Path) -> np.ndarray:
    """A MegaDepth depth map (the ``depth`` dataset of an ``.h5`` file), float32 metres."""
    try:
        import h5py
    except ModuleNotFoundError:
        raise ModuleNotFoundError("MegaDepth depth maps are HDF5 files: pip install h5py", name="h5py") from None
    with h5py.File(path, "r") as f:
        return np.asarray(f["depth"], dtype=np.float32)


@dataclass(frozen=True)
class _MegaDepthScene:
    image_paths: list
    depth_paths: list
    intrinsics: list
    poses: list


class MegaDepthPairs(Dataset):
    """MegaDepth pairs in the official scene-info format (see the module docstring).

    ``size``: longest side of the network input (rounded down to a multiple of ``df``); every image is padded to
    ``size``×``size`` (so batches stack), with masks."""

    def __init__(self, root: str | Path, index: str | Path, size: int = 640,
                 min_overlap: float = MEGADEPTH_MIN_OVERLAP, df: int = 8) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"MegaDepth root {self.root} does not exist")
        self.size, self.df = int(size) // df * df, df
        self.scenes: list[_MegaDepthScene] = []
        self.pairs: list[tuple[int, int, int]] = []
        for f in index_files(index):
            with np.load(f, allow_pickle=True) as info:  # the official files pickle lists of paths and pair tuples
                scene = _MegaDepthScene(*(list(info[k]) for k in ("image_paths", "depth_paths", "intrinsics", "poses")))
                kept = [(int(p[0][0]), int(p[0][1])) for p in info["pair_infos"] if float(p[1]) > min_overlap]
            if kept:
                self.pairs += [(len(self.scenes), i0, i1) for i0, i1 in kept]
                self.scenes.append(scene)

    def __len__(self) -> int:
        return len(self.pairs)

    def _view(self, scene: _MegaDepthScene, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        img = _read_grey(self.root / scene.image_paths[k])
        h, w = img.shape
        f = self.size / max(h, w)
        w_new = max(int(round(w * f)) // self.df * self.df, self.df)
        h_new = max(int(round(h * f)) // self.df * self.df, self.df)
        resized = cv2.resize(img, (w_new, h_new), interpolation=cv2.INTER_AREA)
        image = np.zeros((self.size, self.size), np.float32)
        image[:h_new, :w_new] = resized.astype(np.float32) / 255.0
        mask = torch.zeros((self.size, self.size), dtype=torch.bool)
        mask[:h_new, :w_new] = True
        depth = torch.from_numpy(read_h5_depth(self.root / scene.depth_paths[k]))
        scale = torch.tensor([w / w_new, h / h_new], dtype=torch.float64)
        return torch.from_numpy(image)[None], mask, depth, scale

    def __getitem__(self, index: int) -> DepthPairSample:
        s, i0, i1 = self.pairs[index]
        scene = self.scenes[s]
        image0, mask0, depth0, scale0 = self._view(scene, i0)
        image1, mask1, depth1, scale1 = self._view(scene, i1)
        K0 = torch.tensor(np.asarray(scene.intrinsics[i0], dtype=np.float64).reshape(3, 3))
        K1 = torch.tensor(np.asarray(scene.intrinsics[i1], dtype=np.float64).reshape(3, 3))
        T = _relative_pose(np.asarray(scene.poses[i0], np.float64), np.asarray(scene.poses[i1], np.float64))
        return DepthPairSample(image0, image1, depth0, depth1, K0, K1, torch.from_numpy(T), scale0, scale1, mask0, mask1)

    @staticmethod
    def collate(samples: list[DepthPairSample]) -> DepthPairSample:
        return collate_depth(samples)
