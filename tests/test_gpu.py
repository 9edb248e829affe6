"""CUDA: fp16/bf16 autocast, the fast path, ``device="auto"``, repeatability and GradScaler training.

Marked ``gpu`` (``pytest -m gpu`` runs only these) and skipped without CUDA; ``benchmarks/gpu_check.sh`` runs them on
a GPU machine. They need no shared data: the trained bundled ``tiny_ds`` on the Motorcycle stereo pair that
scikit-image ships (trained weights, so that matches are not near-ties that any rounding flips).

Float32 comparisons run with TF32 off (:func:`ieee_fp32`): by default cuDNN convolutions on Ampere and later GPUs use
TF32 (10-bit mantissa), which would turn "the same matches up to float rounding" into a loose agreement.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from loftr import LoFTR, Matcher
from loftr.model.optimize import optimize_for_inference

from .conftest import match_agreement

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")]

CUDA = torch.device("cuda")
LOW = {"fp16": torch.float16, "bf16": torch.bfloat16}


def motorcycle(size: tuple[int, int] | None = None, tensor: bool = True):
    """The Motorcycle pair (skimage), grey: (1, 1, H, W) float tensors in [0, 1] resized to size = (W, H), or the
    uint8 arrays as they are (``tensor=False``)."""
    import cv2
    from skimage import data

    pair = [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in data.stereo_motorcycle()[:2]]
    if not tensor:
        return pair
    if size is not None:
        pair = [cv2.resize(im, size, interpolation=cv2.INTER_AREA if size[0] <= im.shape[1] else cv2.INTER_LINEAR)
                for im in pair]
    return tuple(torch.from_numpy(im.astype(np.float32) / 255.0)[None, None] for im in pair)


@contextlib.contextmanager
def ieee_fp32():
    """Full float32 in cuDNN convolutions and cuBLAS matmuls (TF32 off), restored afterwards."""
    conv, matmul = getattr(torch.backends.cudnn, "conv", None), torch.backends.cuda.matmul
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9 (mixing it with allow_tf32 is refused)
        before = conv.fp32_precision, matmul.fp32_precision
        conv.fp32_precision = matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision, matmul.fp32_precision = before
    else:
        before = torch.backends.cudnn.allow_tf32, matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, matmul.allow_tf32 = before


def reference(model: LoFTR) -> LoFTR:
    """``model`` taking the reference stages at every size (the size-triggered inference shortcuts off, where the
    model has them)."""
    from loftr.model import optimize

    off = getattr(optimize, "without_shortcuts", None)
    return off(model) if off is not None else model


def run(model: LoFTR, pair, dtype: str = "fp32"):
    """``model.run`` of the pair on the model's device under inference mode (and autocast for fp16/bf16)."""
    dev = next(model.parameters()).device
    img0, img1 = (im.to(dev) for im in pair)
    with torch.inference_mode():
        if dtype == "fp32":
            return model.run(img0, img1)
        with torch.autocast(dev.type, dtype=LOW[dtype]):
            return model.run(img0, img1)


def on_cpu(matches) -> dict:
    return {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in matches.to_dict().items()}


@pytest.fixture(scope="module")
def tiny() -> LoFTR:
    return LoFTR("tiny_ds", weights="tiny_ds")


@pytest.fixture(scope="module")
def pair():
    return motorcycle((640, 480))


@pytest.fixture(scope="module")
def cpu_ref(tiny, pair) -> dict:
    """The CPU float32 matches of the reference path."""
    return on_cpu(run(tiny, pair).matches)


def test_cuda_fp32_gives_the_cpu_matches(tiny, pair, cpu_ref) -> None:
    with ieee_fp32():
        out = on_cpu(run(copy.deepcopy(tiny).to(CUDA), pair).matches)
    assert len(cpu_ref["keypoints0"]) > 300
    assert match_agreement(cpu_ref, out) >= 0.99


@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_low_precision_is_finite_and_close_to_fp32(tiny, pair, cpu_ref, dtype: str, fast: bool) -> None:
    model = copy.deepcopy(tiny).to(CUDA)
    model = optimize_for_inference(model) if fast else model
    out = run(model, pair, dtype)
    for name in ("feat_c0", "feat_c1", "expec_f"):
        assert torch.isfinite(getattr(out, name)).all(), name
    if out.conf_matrix is not None:
        assert torch.isfinite(out.conf_matrix).all()
    m = out.matches
    assert m.keypoints1.dtype == torch.float32  # (the reference path's confidence may be in the autocast dtype)
    assert all(torch.isfinite(t).all() for t in (m.keypoints0, m.keypoints1, m.confidence))
    assert float(m.confidence.min()) >= 0 and float(m.confidence.max()) <= 1
    got = on_cpu(m)
    n_ref, n_got = len(cpu_ref["keypoints0"]), len(got["keypoints0"])
    assert 0.85 * n_ref <= n_got <= 1.15 * n_ref
    assert match_agreement(cpu_ref, got) >= 0.9


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_large_architecture_does_not_overflow(pair, dtype: str) -> None:
    """The official outdoor architecture (256-d, default initialisation) under autocast: no inf/NaN anywhere."""
    torch.manual_seed(0)
    model = LoFTR("outdoor_ds").to(CUDA)
    out = run(model, pair, dtype)
    for name in ("feat_c0", "feat_c1", "expec_f"):
        assert torch.isfinite(getattr(out, name)).all(), name
    if out.conf_matrix is not None:
        assert torch.isfinite(out.conf_matrix).all()
    assert torch.isfinite(out.matches.keypoints1).all() and torch.isfinite(out.matches.confidence).all()


@pytest.mark.parametrize("size", [(640, 480), (1600, 1200)], ids=["640x480", "1600x1200"])
def test_cuda_fast_path_equals_cuda_reference(tiny, size: tuple[int, int]) -> None:
    """The fast copy (folded BatchNorm, channels-last, lazy fine map, blockwise coarse matching at 1600x1200) gives
    the reference matches on the GPU, as it does on the CPU (tests/model/test_fast_paths.py)."""
    images = motorcycle(size)
    model = reference(copy.deepcopy(tiny)).to(CUDA)
    with ieee_fp32():
        ref = run(model, images)
        got = run(optimize_for_inference(model), images)
    assert len(ref.matches) == len(got.matches) > 300
    for name in ("b_ids", "i_ids", "j_ids"):
        assert torch.equal(getattr(ref.coarse, name), getattr(got.coarse, name)), name
    torch.testing.assert_close(got.matches.keypoints0, ref.matches.keypoints0, atol=1e-3, rtol=0)
    torch.testing.assert_close(got.matches.keypoints1, ref.matches.keypoints1, atol=1e-3, rtol=0)
    torch.testing.assert_close(got.matches.confidence, ref.matches.confidence, atol=1e-4, rtol=0)


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip((a.keypoints0, a.keypoints1, a.confidence, a.batch_indexes),
                                                 (b.keypoints0, b.keypoints1, b.confidence, b.batch_indexes)))


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
def test_repeated_calls_are_bitwise_identical(tiny, fast: bool, dtype: str) -> None:
    """With torch's default settings (cudnn.benchmark off), the same call gives bitwise the same matches. If this
    fails, docs/robustness.md says why (a kernel with atomics) and the next test is the way to repeatability."""
    left, right = motorcycle(tensor=False)
    matcher = Matcher(copy.deepcopy(tiny), device="cuda", dtype=dtype, fast=fast)
    first = matcher(left, right)
    assert len(first) > 300
    for _ in range(2):
        assert _same(first, matcher(left, right))


def test_deterministic_algorithms_mode_is_supported_and_repeatable(tiny) -> None:
    """Under ``torch.use_deterministic_algorithms(True)`` every op has a deterministic CUDA kernel (an op without
    one raises, naming itself) and calls repeat bitwise."""
    if ":" not in os.environ.get("CUBLAS_WORKSPACE_CONFIG", ""):
        pytest.skip("set CUBLAS_WORKSPACE_CONFIG=:4096:8 before starting python (gpu_check.sh does)")
    left, right = motorcycle(tensor=False)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for fast in (False, True):
            matcher = Matcher(copy.deepcopy(tiny), device="cuda", dtype="fp16", fast=fast)
            first = matcher(left, right)
            assert len(first) > 300 and _same(first, matcher(left, right)), f"fast={fast}"
    finally:
        torch.use_deterministic_algorithms(before)


def test_device_auto_picks_the_gpu(tiny, cpu_ref) -> None:
    import loftr
    from loftr.train.processes import setup_processes

    left, right = motorcycle(tensor=False)
    for fast, dtype in ((False, "fp32"), (True, "fp16")):
        matcher = Matcher(copy.deepcopy(tiny), device="auto", dtype=dtype, fast=fast)
        assert matcher.device.type == "cuda"
        assert next(matcher.model.parameters()).device.type == "cuda"
        m = matcher(left, right)
        assert len(m) > 300 and m.keypoints0.device.type == "cpu" and torch.isfinite(m.keypoints1).all()
    assert len(loftr.match(left, right, device="auto")) > 300
    assert setup_processes("auto").device.type == "cuda"


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    """Five 128 px grey photos (scikit-image's) for the training tests."""
    import cv2

    from .train.scenes import grey_texture

    folder = tmp_path_factory.mktemp("photos")
    for name in ("camera", "astronaut", "coffee", "chelsea", "brick"):
        cv2.imwrite(str(folder / f"{name}.png"), (grey_texture(name, 128) * 255).round().astype(np.uint8))
    return folder


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_training_steps_on_cuda(photo_dir: Path, tmp_path: Path, precision: str) -> None:
    """fp16: backbone under float16 autocast with a GradScaler; bf16: bfloat16 autocast, no scaler. Losses stay
    finite, the weights move, the scaler state is saved, validation runs on the GPU."""
    from loftr.train.config import TrainConfig
    from loftr.train.trainer import Trainer

    cfg = TrainConfig(images=str(photo_dir), out_dir=str(tmp_path / "run"), size=64, batch_size=2, steps=4, warmup=1,
                      checkpoint_every=2, validate_every=4, val_pairs=2, log_every=1, device="cuda",
                      model_overrides={"match_coarse": {"train_pad_num_gt_min": 4}}, **{precision: True})
    trainer = Trainer(cfg)
    assert next(trainer.model.parameters()).device.type == "cuda"
    assert (trainer.scaler is not None) == (precision == "fp16")
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    last = trainer.run()
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert any("val" in r for r in records)
    moved = [k for k, v in trainer.model.named_parameters() if not torch.equal(v.detach(), before[k])]
    assert len(moved) > len(before) // 2  # at least one step was taken (a scaler may skip a step that overflowed)
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["step"] == 4
    if precision == "fp16":
        assert math.isfinite(float(state["scaler"]["scale"])) and float(state["scaler"]["scale"]) > 0
