"""Training curves of a run: the loss (raw and smoothed) and the validation precision against steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .runlog import read_log


def smooth(values: list[float] | np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average with bias correction (TensorBoard's smoothing); ``weight`` in [0, 1)."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    values = np.asarray(values, dtype=np.float64)
    out = np.empty_like(values)
    acc = 0.0
    for k, v in enumerate(values):
        acc = weight * acc + (1 - weight) * v
        out[k] = acc / (1 - weight ** (k + 1))
    return out


def plot_run(run_dir: str | Path, weight: float = 0.9):
    """A matplotlib Figure (object-oriented, no pyplot state): the losses on a log scale (raw total faint, smoothed
    total, coarse and fine) and, on a second axis, the validation precision at 1 and 3 px, against steps."""
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    records, vals = read_log(run_dir)
    if not records and not vals:
        raise ValueError(f"{run_dir / 'log.jsonl'} holds no training records yet")
    fig = Figure(figsize=(8, 4.5), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    steps = np.array([r["step"] for r in records])
    if records:
        total = np.array([r["loss"] for r in records])
        ax.plot(steps, total, color="tab:blue", alpha=0.25, linewidth=0.8, label="loss")
        ax.plot(steps, smooth(total, weight), color="tab:blue", linewidth=1.8, label=f"loss (smoothed {weight:g})")
        for key, colour in (("loss_c", "tab:cyan"), ("loss_f", "tab:purple")):
            if all(key in r for r in records):
                ax.plot(steps, smooth([r[key] for r in records], weight), color=colour, linewidth=1.0,
                        linestyle="--", label=f"{'coarse' if key == 'loss_c' else 'fine'} (smoothed)")
        if (total > 0).all():
            ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if vals:
        ax2 = ax.twinx()
        vsteps = [v["step"] for v in vals]
        for key, marker, colour in (("precision@1px", "o", "tab:orange"), ("precision@3px", "s", "tab:red")):
            if any(key in v for v in vals):
                ax2.plot(vsteps, [v.get(key, np.nan) for v in vals], marker=marker, color=colour, linewidth=1.2,
                         label=f"validation {key}")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("validation precision")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="center right", fontsize=8)
    last = records[-1]["step"] if records else vals[-1]["step"]
    ax.set_title(f"{run_dir.name}: {last} steps")
    fig.tight_layout()
    return fig


def save_plot(run_dir: str | Path, out: str | Path, weight: float = 0.9) -> Path:
    """Write :func:`plot_run` to ``out`` (.png, .pdf or .svg)."""
    out = Path(out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ValueError(f"the plot must be .png, .pdf or .svg, got {out.name}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = plot_run(run_dir, weight)
    FigureCanvasAgg(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
