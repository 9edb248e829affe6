"""Time and peak memory against image size: ours (fast fp32, fast bf16) and kornia's LoFTR (fp32), same weights.

    .venv/bin/python benchmarks/bench_scaling.py [--sizes 640x480,1280x720,...] [--kornia-max 1600x1200]
    .venv/bin/python benchmarks/bench_scaling.py --plot-only   # redraw from benchmarks/scaling.json

Every (size, configuration) runs in a fresh interpreter: the model is built, warmed up on a 320x240 pair, then
matches the pair at the size (3 times below 2 MP, the fastest kept; once above); that time and the process's peak
resident memory (VmHWM, whole process: interpreter, torch and weights included) are recorded. kornia runs only up to ``--kornia-max`` pixels: its
dense (L, S) confidence matrices alone need ~7 GB at 1600x1200 and grow with the square of the pixel count. Results
go to benchmarks/scaling.json (updated after each run) and a log-log plot to benchmarks/scaling.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402
from bench_speed import build  # noqa: E402

CONFIGS = ("ours fast fp32", "ours fast bf16", "kornia fp32")
SIZES = "640x480,1280x720,1600x1200,1920x1080,3200x2400"
RESULTS, PLOT = HERE / "scaling.json", HERE / "scaling.png"


def child(name: str, size: tuple[int, int], thr: float, repeat: int) -> None:
    model = build(name, thr)
    with torch.inference_mode():
        warm0, warm1 = common.load_pair((320, 240))
        model({"image0": warm0, "image1": warm1})
        img0, img1 = common.load_pair(size)
        seconds = []
        for _ in range(repeat):
            start = time.perf_counter()
            out = model({"image0": img0, "image1": img1})
            seconds.append(time.perf_counter() - start)
    print(json.dumps({"seconds": min(seconds), "runs": repeat, "peak_rss_mib": common.vm_hwm_mib(),
                      "matches": len(out["keypoints0"])}))


def _pixels(size: str) -> int:
    w, h = (int(v) for v in size.lower().split("x"))
    return w * h


def table(results: list[dict]) -> str:
    """Markdown: one row per size, time / peak RSS per configuration, and ours/kornia ratios."""
    sizes = sorted({r["size"] for r in results}, key=_pixels)
    lines = ["| size | " + " | ".join(f"{c} time (s) / peak RSS (MiB)" for c in CONFIGS)
             + " | fast fp32 / kornia: time, RSS |", "|---|" + "---|" * (len(CONFIGS) + 1)]
    for size in sizes:
        row = {r["config"]: r for r in results if r["size"] == size}
        cells = []
        for c in CONFIGS:
            r = row.get(c)
            if r is None or "seconds" not in r:
                cells.append("-" if r is None else f"failed ({r.get('error', '?')[:40]})")
            else:
                cells.append(f"{r['seconds']:.1f} / {r['peak_rss_mib']:.0f}")
        ours, theirs = row.get("ours fast fp32", {}), row.get("kornia fp32", {})
        ratio = "-"
        if "seconds" in ours and "seconds" in theirs:
            ratio = (f"{ours['seconds'] / theirs['seconds']:.2f}, "
                     f"{ours['peak_rss_mib'] / theirs['peak_rss_mib']:.2f}")
        lines.append(f"| {size} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path = PLOT) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    sizes = sorted({r["size"] for r in results if "seconds" in r}, key=_pixels)
    for c, marker in zip(CONFIGS, "osD"):
        rows = sorted((r for r in results if r["config"] == c and "seconds" in r), key=lambda r: _pixels(r["size"]))
        mpix = [_pixels(r["size"]) / 1e6 for r in rows]
        axes[0].loglog(mpix, [r["seconds"] for r in rows], marker=marker, label=c)
        axes[1].loglog(mpix, [r["peak_rss_mib"] / 1024 for r in rows], marker=marker, label=c)
    for ax, ylabel in zip(axes, ("time per pair (s)", "peak RSS (GiB)")):
        ax.set_xlabel("image size (both images; log scale of the pixel count)")
        ax.xaxis.set_major_locator(FixedLocator([_pixels(sz) / 1e6 for sz in sizes]))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticklabels(sizes, rotation=30, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("LoFTR outdoor_ds on a CPU pair: ours vs kornia (log-log)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=SIZES)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--kornia-max", default="1600x1200", help="largest size kornia is run at")
    parser.add_argument("--thr", type=float, default=common.THR)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeat-below", type=int, default=2_000_000,
                        help="sizes with fewer pixels are timed 3 times (the fastest kept), larger ones once")
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--size", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child(args.child, tuple(int(v) for v in args.size.split("x")), args.thr, args.repeat)

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    if not args.plot_only:
        for size in args.sizes.split(","):
            for config in args.configs.split(","):
                if config.startswith("kornia") and _pixels(size) > _pixels(args.kornia_max):
                    continue
                extra = ["--threads", str(args.threads)] if args.threads else []
                extra += ["--repeat", "3" if _pixels(size) < args.repeat_below else "1"]
                r = common.peak_rss_mib(Path(__file__), config, "--size", size, "--thr", str(args.thr), *extra)
                r.update(size=size, config=config, machine=common.machine())
                results = [x for x in results if (x["size"], x["config"]) != (size, config)] + [r]
                RESULTS.write_text(json.dumps(results, indent=1))
                print(f"{size} {config}: {r}", flush=True)
    print(table(results))
    plot(results)
    print(f"plot: {PLOT}")


if __name__ == "__main__":
    main()
