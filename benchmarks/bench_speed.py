"""Speed, peak memory and match agreement of LoFTR on one real pair: ours (eager fp32 = the reference path,
``Matcher(fast=False)`` / ``--reference``; fast fp32 = what ``Matcher()`` and every sub-command run by default; fast
bf16 = ``dtype="bf16"``) and kornia's LoFTR (fp32), all with the same weights.

    .venv/bin/python benchmarks/bench_speed.py [--size 640x480] [--runs 5] [--threads N] [--compiled]

Timing: every configuration runs once to warm up, then ``--runs`` rounds run each configuration once, in an order
rotated per round (so a noisy neighbour hurts all of them alike); the table gives the median time and the median of
the per-round ratios to kornia. Peak memory: each configuration again in a fresh interpreter (VmHWM after one match,
whole process). Agreement: matches in common with ours eager fp32 (same keypoint0 cell, keypoint1 within 1 px) over
the larger set; "max |dkp|" is the largest keypoint difference when both give the very same matches.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

CONFIGS = ("ours eager fp32", "ours fast fp32", "ours fast bf16", "kornia fp32")
COMPILED = "ours fast bf16 compiled"  # --compiled: torch.compile of the backbone and coarse transformer (~1 min once)


def build(name: str, thr: float) -> torch.nn.Module:
    """One configuration, its weights from :func:`common.calibrated_model` (seed 0)."""
    from loftr.model.optimize import optimize_for_inference

    ours = common.calibrated_model(thr=thr)
    if name == "ours eager fp32":
        return ours
    if name == "ours fast fp32":
        return optimize_for_inference(ours)
    if name == "ours fast bf16":
        return optimize_for_inference(ours, dtype=torch.bfloat16)
    if name == COMPILED:
        return optimize_for_inference(ours, dtype=torch.bfloat16, compile=True)
    return common.kornia_model(ours, thr=thr)


def child(name: str, size: tuple[int, int], thr: float) -> None:
    """Runs in a fresh interpreter: one match, then prints time and peak memory as JSON."""
    model = build(name, thr)
    img0, img1 = common.load_pair(size)
    with torch.inference_mode():
        start = time.perf_counter()
        out = model({"image0": img0, "image1": img1})
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mib": common.vm_hwm_mib(), "matches": len(out["keypoints0"])}))


def trained_bf16_agreement(size: tuple[int, int]) -> float:
    """bf16 vs fp32 agreement with the bundled trained weights (tiny_ds), whose matches are less ambiguous."""
    from loftr import LoFTR
    from loftr.model.optimize import optimize_for_inference

    model = LoFTR("tiny_ds", weights="tiny_ds")
    img0, img1 = common.load_pair(size)
    data = {"image0": img0, "image1": img1}
    with torch.inference_mode():
        ref = model(data)
        low = optimize_for_inference(model, dtype=torch.bfloat16)(data)
    return common.agreement(ref, low)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="640x480", help="WxH of both images")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--thr", type=float, default=common.THR, help="coarse threshold (both implementations)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-configuration memory runs")
    parser.add_argument("--compiled", action="store_true",
                        help=f"also time '{COMPILED}' (torch.compile; compiling takes about a minute)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child(args.child, size, args.thr)

    configs = CONFIGS + ((COMPILED,) if args.compiled else ())
    models = {name: build(name, args.thr) for name in configs}
    img0, img1 = common.load_pair(size)
    data = {"image0": img0, "image1": img1}
    times: dict[str, list[float]] = {name: [] for name in configs}
    ratios: dict[str, list[float]] = {name: [] for name in configs}
    with torch.inference_mode():
        outputs = {name: model(data) for name, model in models.items()}  # warm-up, and the matches compared
        for r in range(args.runs):
            order = configs[r % len(configs):] + configs[: r % len(configs)]
            round_times = {}
            for name in order:
                start = time.perf_counter()
                models[name](data)
                round_times[name] = time.perf_counter() - start
            for name in configs:
                times[name].append(round_times[name])
                ratios[name].append(round_times[name] / round_times["kornia fp32"])
            print(f"round {r + 1}: " + ", ".join(f"{n} {t:.2f}s" for n, t in round_times.items()), flush=True)
    memory = {} if args.no_memory else {
        name: common.peak_rss_mib(Path(__file__), name, "--size", args.size, "--thr", str(args.thr),
                                  *(["--threads", str(args.threads)] if args.threads else []))
        for name in configs
    }

    ref = outputs["ours eager fp32"]
    print(f"\n{common.machine()}; pair {common.PAIR[0]} / {common.PAIR[1]} at {args.size}, thr {args.thr}, "
          f"median of {args.runs} interleaved runs")
    print("| configuration | time (s) | ratio to kornia | peak RSS (MiB) | matches | agreement | max dkp (px) |")
    print("|---|---|---|---|---|---|---|")
    for name in configs:
        rss = memory.get(name, {}).get("peak_rss_mib")
        err = common.max_keypoint_error(ref, outputs[name])
        print(f"| {name} | {statistics.median(times[name]):.2f} | {statistics.median(ratios[name]):.3f} | "
              f"{'-' if rss is None else f'{rss:.0f}'} | {len(outputs[name]['keypoints0'])} | "
              f"{common.agreement(ref, outputs[name]):.3f} | {'-' if err == float('inf') else f'{err:.1e}'} |")
    print(f"\nbf16 agreement with the trained tiny_ds weights at {args.size}: {trained_bf16_agreement(size):.3f}")


if __name__ == "__main__":
    main()
