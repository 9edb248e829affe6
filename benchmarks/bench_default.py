"""Time per 640x480 pair of what most users run — ``loftr.Matcher()``: the bundled tiny_ds, fast path, fp32 — against
the reference path (``fast=False``), bf16, and OpenCV SIFT (8k keypoints, ratio test 0.8) in the same run; plus the
start of a ``loftr match`` process (interpreter, imports, model load), reported separately, and a profile of where the
default matcher's time goes.

    .venv/bin/python benchmarks/bench_default.py [--runs 5] [--threads N] [--profile] [--stages]

``--stages``: time (median of the runs) and floating-point operations (torch's FlopCounterMode: convolutions and
matrix products) of each stage of the default match, fp32 and bf16 — where the time goes, and the arithmetic floor.

Timing as in bench_speed.py: one warm-up each, then ``--runs`` rounds running every configuration once in an order
rotated per round; the median time and the median of the per-round ratios to SIFT.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def configs(size: tuple[int, int]) -> dict:
    from loftr import Matcher
    from loftr.eval.baselines import SIFTMatcher

    img0, img1 = common.load_pair(size)
    arrays = (img0[0, 0].numpy(), img1[0, 0].numpy())
    sift_inputs = tuple((a * 255).round().astype(np.uint8) for a in arrays)
    default, reference, bf16 = Matcher(), Matcher(fast=False), Matcher(dtype="bf16")
    sift = SIFTMatcher(ratio=0.8, max_keypoints=8000, max_size=640)
    return {
        "Matcher() tiny_ds fast fp32 (default)": lambda: len(default(*arrays)),
        "Matcher(fast=False) tiny_ds reference fp32": lambda: len(reference(*arrays)),
        "Matcher(dtype='bf16') tiny_ds fast bf16": lambda: len(bf16(*arrays)),
        "OpenCV SIFT 8k + ratio test": lambda: len(sift(*sift_inputs).scores),
    }


def process_start(runs: int) -> float:
    """Median seconds of `python -c 'build the loftr parser and load the default model'` in a fresh interpreter."""
    code = "import loftr.cli as c; c.build_parser(); from loftr import Matcher; Matcher()"
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def profile(size: tuple[int, int]) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    from loftr import Matcher

    img0, img1 = common.load_pair(size)
    m = Matcher()
    m(img0[0, 0], img1[0, 0])
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        m(img0[0, 0], img1[0, 0])
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


STAGES = (  # (label, owner of the method, method): the stages of LoFTR.run in order
    ("backbone (coarse path)", "net", "extract"),
    ("coarse transformer", "net", "transform_coarse"),
    ("coarse matching", "coarse_matching", "forward"),
    ("fine windows (FPN around matches)", "fine_preprocess", "forward"),
    ("fine transformer", "loftr_fine", "forward"),
)


def _timed(owner: object, method: str, label: str, seconds: dict[str, float]) -> None:
    """Wraps ``owner.method`` (an instance attribute shadowing it) to add its wall time to ``seconds[label]``."""
    original = getattr(owner, method)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - start

    object.__setattr__(owner, method, wrapper)  # nn.Module.__setattr__ would refuse a function for a child's name


def stages(size: tuple[int, int], runs: int) -> None:
    """Per-stage median time and GFLOP of the default match, fp32 and bf16."""
    from torch.utils.flop_counter import FlopCounterMode

    from loftr import Matcher

    img0, img1 = common.load_pair(size)
    arrays = (img0[0, 0].numpy(), img1[0, 0].numpy())
    print("\n| stage | fp32 time (s) | fp32 GFLOP | bf16 time (s) |")
    print("|---|---|---|---|")
    table: dict[str, list] = {}
    for dtype in ("fp32", "bf16"):
        m = Matcher(dtype=dtype)
        net = m.model
        owners = {"net": net, "coarse_matching": net.coarse_matching, "fine_preprocess": net.fine_preprocess,
                  "loftr_fine": net.loftr_fine}
        seconds: dict[str, float] = {}
        for label, owner, method in STAGES:
            _timed(owners[owner], method, label, seconds)
        m(*arrays)
        per_run: dict[str, list[float]] = {label: [] for label, _, _ in STAGES}
        totals = []
        for _ in range(runs):
            seconds.clear()
            start = time.perf_counter()
            m(*arrays)
            totals.append(time.perf_counter() - start)
            for label in per_run:
                per_run[label].append(seconds.get(label, 0.0))
        flops: dict[str, float] = {}
        if dtype == "fp32":
            for label, owner, method in STAGES:  # count each stage alone: wrap it in a counter
                counter = FlopCounterMode(display=False)
                inner = getattr(owners[owner], method)

                def counted(*args, _inner=inner, _counter=counter, **kwargs):
                    with _counter:
                        return _inner(*args, **kwargs)

                object.__setattr__(owners[owner], method, counted)
                m(*arrays)
                object.__setattr__(owners[owner], method, inner)
                flops[label] = counter.get_total_flops() / 1e9
        for label in per_run:
            table.setdefault(label, []).extend([statistics.median(per_run[label])] + ([flops[label]] if flops else []))
        table.setdefault("whole match", []).extend([statistics.median(totals)] +
                                                   ([sum(flops.values())] if flops else []))
    for label, (t32, gflop, t16) in table.items():
        print(f"| {label} | {t32:.3f} | {gflop:.1f} | {t16:.3f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="640x480", help="WxH of both images")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch and OpenCV threads (default: theirs)")
    parser.add_argument("--profile", action="store_true", help="also print the profile of one default match")
    parser.add_argument("--stages", action="store_true", help="also print time and GFLOP per stage (fp32, bf16)")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    if args.threads:
        import cv2

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    runs = configs(size)
    names = list(runs)
    counts = {name: run() for name, run in runs.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    sift = names[-1]
    for r in range(args.runs):
        order = names[r % len(names):] + names[: r % len(names)]
        round_times = {}
        for name in order:
            start = time.perf_counter()
            runs[name]()
            round_times[name] = time.perf_counter() - start
        for name in names:
            times[name].append(round_times[name])
            ratios[name].append(round_times[name] / round_times[sift])
        print(f"round {r + 1}: " + ", ".join(f"{n.split(' ')[0]} {t:.2f}s" for n, t in round_times.items()), flush=True)
    print(f"\n{common.machine()}; pair {common.PAIR[0]} / {common.PAIR[1]} at {args.size}, median of {args.runs} "
          "interleaved runs")
    print("| configuration | time (s) | ratio to SIFT | matches |")
    print("|---|---|---|---|")
    for name in names:
        print(f"| {name} | {statistics.median(times[name]):.2f} | {statistics.median(ratios[name]):.2f} | "
              f"{counts[name]} |")
    print(f"\n`loftr` process start (interpreter, imports, parser, bundled model): {process_start(3):.2f} s")
    if args.profile:
        profile(size)
    if args.stages:
        stages(size, args.runs)


if __name__ == "__main__":
    main()
