"""Tiny benchmark folders in the official formats, written into a test's tmp_path."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from loftr.eval.pose import scale_intrinsics

from .scenes import (
    K_TINY,
    gt_correspondences,
    homography_pair,
    render,
    render_with_depth,
    room_pose,
    world_to_camera,
    write_pfm,
)

IDENTITY = np.eye(4)


def imwrite(path: Path, image: np.ndarray, *params: int) -> None:
    """cv2.imwrite that fails loudly; grey images become BGR for .ppm (the format HPatches uses)."""
    if path.suffix == ".ppm" and image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if not cv2.imwrite(str(path), image, list(params)):
        raise OSError(f"could not write {path}")


def write_scannet(root: Path, rel_pose: bool = True, scans_test: bool = False) -> tuple[Path, list[np.ndarray]]:
    """Two ScanNet pairs (scene0707_00 frames 0-15, scene0708_01 frames 100-115) as 160x120 jpgs, a test.npz
    (with ``rel_pose`` or with pose files) and an intrinsics.npz for 640x480. Returns the index and the true
    T_0to1 of each pair."""
    K640 = scale_intrinsics(K_TINY, (160, 120), (640, 480))
    names, truths, intrinsics = [], [], {}
    for motion, (scene_id, sub, stem0, stem1) in enumerate([(707, 0, 0, 15), (708, 1, 100, 115)]):
        scene = f"scene{scene_id:04d}_{sub:02d}"
        folder = root / ("scans_test" if scans_test else "") / scene
        (folder / "color").mkdir(parents=True)
        (folder / "pose").mkdir()
        for stem, T in ((stem0, IDENTITY), (stem1, room_pose(motion))):
            imwrite(folder / "color" / f"{stem}.jpg", render(T), cv2.IMWRITE_JPEG_QUALITY, 98)
            np.savetxt(folder / "pose" / f"{stem}.txt", np.linalg.inv(T), delimiter=" ")  # camera-to-world
        names.append([scene_id, sub, stem0, stem1])
        truths.append(room_pose(motion) @ np.linalg.inv(IDENTITY))
        intrinsics[scene] = K640
    index = root / "index" / "test.npz"
    index.parent.mkdir()
    arrays = {"name": np.array(names, dtype=np.int64)}
    if rel_pose:
        arrays["rel_pose"] = np.stack([T[:3].reshape(12) for T in truths])
    np.savez(index, **arrays)
    np.savez(root / "index" / "intrinsics.npz", **intrinsics)
    return index, truths


def write_megadepth(root: Path) -> tuple[Path, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """One MegaDepth scene-info file (0015_0.1_0.3.npz, 2 pairs, one image path None, per-image K) with its
    images under root/Undistorted_SfM and a list file; returns the list file and (T_0to1, K0, K1) per pair."""
    K_wide = np.array([[95.0, 0.0, 80.0], [0.0, 95.0, 60.0], [0.0, 0.0, 1.0]])
    poses = [IDENTITY, np.eye(4), room_pose(0), room_pose(1)]
    Ks = [K_TINY, K_TINY, K_TINY, K_wide]
    paths: list[str | None] = [None] * 4
    for i in (0, 2, 3):
        paths[i] = f"Undistorted_SfM/0015/images/{i:03d}.jpg"
        (root / paths[i]).parent.mkdir(parents=True, exist_ok=True)
        view = render_with_depth(poses[i], Ks[i])[0]
        imwrite(root / paths[i], view, cv2.IMWRITE_JPEG_QUALITY, 98)
    pair_infos = np.empty(2, dtype=object)
    pair_infos[0] = ((0, 2), 0.5, np.zeros(3))
    pair_infos[1] = ((0, 3), 0.3, np.zeros(3))
    index_dir = root / "index" / "scene_info_val_1500"
    index_dir.mkdir(parents=True)
    np.savez(index_dir / "0015_0.1_0.3.npz", image_paths=np.array(paths, dtype=object),
             depth_paths=np.array([None] * 4, dtype=object), intrinsics=np.stack(Ks), poses=np.stack(poses),
             pair_infos=pair_infos)
    listing = root / "index" / "megadepth_test_1500.txt"
    listing.write_text("0015_0.1_0.3\n")
    truths = [(poses[j] @ np.linalg.inv(poses[0]), Ks[0], Ks[j]) for j in (2, 3)]
    return listing, truths


def hpatches_h(k: int, viewpoint: bool) -> np.ndarray:
    """The H_1_k of the generated sequences: identity for illumination, a growing mild warp for viewpoint."""
    if not viewpoint:
        return np.eye(3)
    a, s = np.deg2rad(3.0 * k), 1.0 - 0.03 * k
    H = np.array([[s * np.cos(a), -s * np.sin(a), 4.0 * k], [s * np.sin(a), s * np.cos(a), -2.0 * k],
                  [1e-4 * k, -5e-5 * k, 1.0]])
    return H


def write_hpatches(root: Path) -> Path:
    """i_tiny (brightness changes) and v_tiny (warps) with 1.ppm..6.ppm (160x120) and H_1_2..H_1_6."""
    for seq, viewpoint, tex in (("i_tiny", False, "coffee"), ("v_tiny", True, "astronaut")):
        folder = root / seq
        folder.mkdir(parents=True)
        base, _ = homography_pair(tex, (160, 120), np.eye(3))
        imwrite(folder / "1.ppm", base)
        for k in range(2, 7):
            H = hpatches_h(k, viewpoint)
            img = cv2.warpPerspective(base, H, (160, 120), flags=cv2.INTER_LINEAR)
            if not viewpoint:
                img = np.clip(img.astype(np.float64) * (1.0 - 0.1 * k) + 5.0 * k, 0, 255).astype(np.uint8)
            imwrite(folder / f"{k}.ppm", img)
            np.savetxt(folder / f"H_1_{k}", H)
    return root


def write_wxbs(root: Path) -> Path:
    """WGBS/room (motion 0), WLABS/room_dark (motion 1, darker) and WGABS/broken (no 01 image)."""
    for cat, pair, motion, gain in (("WGBS", "room", 0, 1.0), ("WLABS", "room_dark", 1, 0.6),
                                    ("WGABS", "broken", 0, 1.0)):
        folder = root / cat / pair
        folder.mkdir(parents=True)
        T1 = room_pose(motion)
        if pair != "broken":
            imwrite(folder / "01.png", render(IDENTITY))
        imwrite(folder / "02.png", (render(T1) * gain).astype(np.uint8))
        np.savetxt(folder / "corrs.txt", gt_correspondences(IDENTITY, T1))
    return root


def write_middlebury(root: Path, baseline: float = 0.25) -> tuple[Path, np.ndarray]:
    """A rectified pair of the room (right camera ``baseline`` to the right) with its exact left disparity
    f * b / z in disp0.pfm (inf on a strip marked unknown); returns the folder and the disparity."""
    folder = root / "Room-perfect"
    folder.mkdir(parents=True)
    left, depth = render_with_depth(IDENTITY)
    right = render(world_to_camera(np.eye(3), np.array([baseline, 0.0, 0.0])))
    disparity = K_TINY[0, 0] * baseline / depth
    disparity[:, :4] = np.inf
    imwrite(folder / "im0.png", left)
    imwrite(folder / "im1.png", right)
    write_pfm(folder / "disp0.pfm", disparity)
    return folder, disparity
