"""Shared pieces of the benchmarks: the image pair, models with identical weights, match agreement, peak memory.

Weights: no pretrained outdoor checkpoint is available offline, so both implementations get the same random
weights whose BatchNorm statistics are measured on a real photo (plain random init maps every token to nearly the
same feature and leaves a handful of matches). Random weights give low confidences, so the coarse threshold is
1e-6 by default (``--thr``): every mutual nearest neighbour off the border is a match (444 on the 640x480 pair; the
trained outdoor model gives ~1-2k there, so the fine stage is lighter here than in real use).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
PAIR = ("LightGlue__assets_sacre_coeur1.jpg", "LightGlue__assets_sacre_coeur2.jpg")
CALIBRATION = "RoMa__assets_toronto_A.jpg"
THR = 1e-6


def grey_tensor(grey, size: tuple[int, int]) -> torch.Tensor:
    """(1, 1, H, W) float32 in [0, 1] of a uint8 grey array, resized to size = (W, H) (area when shrinking,
    bilinear otherwise)."""
    import cv2
    import numpy as np

    shrink = grey.shape[1] >= size[0]
    grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return torch.from_numpy(grey.astype(np.float32) / 255.0)[None, None]


def load_image(name: str, size: tuple[int, int]) -> torch.Tensor:
    """A photo of ``PHOTOS`` as :func:`grey_tensor`."""
    import cv2

    return grey_tensor(cv2.imread(str(PHOTOS / name), cv2.IMREAD_GRAYSCALE), size)


def load_pair(size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    return load_image(PAIR[0], size), load_image(PAIR[1], size)


def skimage_grey(name: str):
    """A uint8 grey image that scikit-image ships (``skimage.data.NAME``; for machines without ../shared)."""
    import cv2
    from skimage import data

    img = getattr(data, name)()
    return cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img


def motorcycle_pair(size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The Middlebury Motorcycle stereo pair that scikit-image ships (741x500), resized to size = (W, H)."""
    import cv2
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    return tuple(grey_tensor(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), size) for im in (left, right))


def calibrated_model(thr: float = THR, seed: int = 0, preset: str = "outdoor_ds",
                     calibration: torch.Tensor | None = None) -> torch.nn.Module:
    """Our LoFTR (eval mode) with random weights and BatchNorm statistics measured on a real photo
    (``calibration``, (1, 1, H, W) in [0, 1]; default: ``CALIBRATION`` at 320x240)."""
    from loftr import LoFTR, get_preset
    from loftr.config import with_overrides

    if calibration is None:
        calibration = load_image(CALIBRATION, (320, 240))
    torch.manual_seed(seed)
    model = LoFTR(config=with_overrides(get_preset(preset), thr=thr))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.momentum = None  # cumulative average over the one calibration pass
        m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model.backbone(calibration)
    return model.eval()


def kornia_model(ours: torch.nn.Module, thr: float = THR) -> torch.nn.Module:
    """kornia's LoFTR(pretrained=None) with the weights of ``ours`` (outdoor_ds settings), in eval mode."""
    import kornia.feature.loftr.loftr as kl

    cfg = copy.deepcopy(kl.default_cfg)
    cfg["coarse"]["temp_bug_fix"] = ours.config.temp_bug_fix
    cfg["match_coarse"].update(thr=thr, match_type="dual_softmax", skh_prefilter=False)
    theirs = kl.LoFTR(pretrained=None, config=cfg)
    theirs.load_state_dict(copy.deepcopy(ours.state_dict()))
    return theirs.eval()


def agreement(ref: dict[str, torch.Tensor], other: dict[str, torch.Tensor], tol: float = 1.0) -> float:
    """Matches in common / the larger set: same pair and keypoint0 (its coarse cell), keypoint1 within ``tol`` px."""
    if len(ref["keypoints0"]) == 0 or len(other["keypoints0"]) == 0:
        return float(len(ref["keypoints0"]) == len(other["keypoints0"]))
    key = lambda d: {(int(b), round(float(x)), round(float(y))): i  # noqa: E731
                     for i, (b, (x, y)) in enumerate(zip(d["batch_indexes"], d["keypoints0"]))}
    a, b = key(ref), key(other)
    common = 0
    for k, i in a.items():
        j = b.get(k)
        if j is not None and float((ref["keypoints1"][i].float() - other["keypoints1"][j].float()).norm()) <= tol:
            common += 1
    return common / max(len(a), len(b))


def max_keypoint_error(ref: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> float:
    """Largest keypoint difference (px) when both have the same matches in the same order, else inf."""
    if ref["keypoints0"].shape != other["keypoints0"].shape:
        return float("inf")
    if not torch.equal(ref["keypoints0"].float(), other["keypoints0"].float()):
        return float("inf")
    if len(ref["keypoints1"]) == 0:
        return 0.0
    return float((ref["keypoints1"].float() - other["keypoints1"].float()).abs().max())


def peak_rss_mib(script: Path, *args: str) -> dict:
    """Runs ``script --child ARGS`` in a fresh interpreter; returns its JSON line plus its peak RSS (VmHWM, MiB)."""
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT}")
    proc = subprocess.run([sys.executable, str(script), "--child", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["killed"])[-1], "returncode": proc.returncode}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def vm_hwm_mib() -> float:
    """This process's peak resident memory so far (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    """CPU model and core count, from /proc/cpuinfo."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
