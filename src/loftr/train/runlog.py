"""Reading a training run's ``log.jsonl``: loss records, validation records and the training time.

Every ``log_every`` steps the trainer appends ``{"loss", "loss_c", "loss_f", "gt", "pred", "step", "lr",
"sec_per_step", "elapsed"}`` and after each validation ``{"val": {..., "step"}}``. A run that was killed and resumed
logs some steps twice (those after its last checkpoint): the later record of a step wins. Older runs have no
``elapsed``; their time is the sum of ``sec_per_step`` over the logged intervals.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_log(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(training records, validation metrics), each sorted by step with one record per step. ``path``: the
    ``log.jsonl`` file or the run folder. Unreadable lines (a process killed mid-write) are skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no training log {path}")
    train: dict[int, dict] = {}
    val: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        if isinstance(record.get("val"), dict) and "step" in record["val"]:
            val[int(record["val"]["step"])] = record["val"]
        elif "step" in record and "loss" in record:
            train[int(record["step"])] = record
    return [train[k] for k in sorted(train)], [val[k] for k in sorted(val)]


def training_seconds(records: list[dict], up_to_step: int | None = None) -> float:
    """Training time in seconds up to ``up_to_step`` (all when None) from training records of :func:`read_log`."""
    kept = [r for r in records if up_to_step is None or r["step"] <= up_to_step]
    if not kept:
        return 0.0
    if "elapsed" in kept[-1]:
        return float(kept[-1]["elapsed"])
    total, previous = 0.0, 0
    for r in kept:
        if "sec_per_step" in r:
            total += float(r["sec_per_step"]) * (r["step"] - previous)
        previous = r["step"]
    return total


def format_duration(seconds: float) -> str:
    """``1 h 52 min``, ``3 min 20 s``, ``12 s``."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min {s:02d} s"
    return f"{s} s"
