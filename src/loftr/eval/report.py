"""What every benchmark shares: the loop over pairs and matchers, the result type, JSON and markdown output.

A benchmark gives pairs (objects with ``name``, ``split``, ``image0``, ``image1``), a pure ``score(pair, matches)
-> dict`` of per-pair metrics and a pure ``aggregate(records) -> dict`` of summary metrics; :func:`evaluate` runs
every matcher on every pair (each image decoded once) and :func:`summarise` builds one table row per method and
split ("all", then each split when there are several).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

import numpy as np
from tqdm import tqdm

from ..errors import LoFTRError
from ..io import ImageLike, read_image
from .baselines import PairMatcher, PairMatches

log = logging.getLogger(__name__)


class EvalPair(Protocol):
    """The fields the loop needs; each benchmark's pair type adds its ground truth."""

    name: str
    split: str
    image0: ImageLike
    image1: ImageLike


P = TypeVar("P", bound=EvalPair)
Record = dict[str, Any]


@dataclass(frozen=True)
class Loaded(Generic[P]):
    """What a dataset reader found: the usable ``pairs`` and the names of those ``skipped`` (files missing)."""

    pairs: tuple[P, ...]
    skipped: tuple[str, ...] = ()

    def limited(self, limit: int | None) -> Loaded[P]:
        """The first ``limit`` pairs (all when None)."""
        if limit is not None and limit < 1:
            raise LoFTRError(f"--limit must be at least 1, got {limit}")
        return self if limit is None else Loaded(self.pairs[:limit], self.skipped)


@dataclass(frozen=True)
class Column:
    """A summary metric: its key, its table header and how to print it ("percent", "float", "int", "seconds")."""

    key: str
    header: str
    kind: Literal["percent", "float", "int", "seconds"] = "percent"

    def format(self, value: Any) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "–"
        if self.kind == "percent":
            return f"{100.0 * value:.1f}"
        if self.kind == "int":
            return f"{value:.0f}"
        if self.kind == "seconds":
            return f"{value:.2f}"
        return f"{value:.3g}"


COMMON_COLUMNS = (Column("matches", "Matches", "int"), Column("seconds", "s/pair", "seconds"))


@dataclass(frozen=True)
class SummaryRow:
    """One line of the table: a method on a split of ``pairs`` pairs."""

    method: str
    split: str
    pairs: int
    metrics: dict[str, float]


@dataclass(frozen=True, eq=False)
class BenchmarkResult:
    """A benchmark run: table ``rows``, per-pair arrays ``per_pair[method][key]`` (one value per pair, in
    order), the ``config`` it ran with and the pairs the reader ``skipped``."""

    benchmark: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[SummaryRow, ...]
    per_pair: dict[str, dict[str, list[Any]]]
    config: dict[str, Any] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()

    def row(self, method: str, split: str = "all") -> SummaryRow:
        for r in self.rows:
            if r.method == method and r.split == split:
                return r
        raise KeyError(f"no row for method {method!r} on split {split!r}")

    def to_markdown(self) -> str:
        header = ["Method", "Split", "Pairs", *(c.header for c in self.columns)]
        lines = [f"### {self.title}", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
        for r in self.rows:
            cells = [r.method, r.split, str(r.pairs), *(c.format(r.metrics.get(c.key)) for c in self.columns)]
            lines.append("| " + " | ".join(cells) + " |")
        if any(c.kind == "percent" for c in self.columns):
            lines += ["", "AUC, precision and fractions in %; counts and s/pair are means over pairs."]
        if self.skipped:
            lines += ["", f"Skipped ({len(self.skipped)}, files missing): {', '.join(self.skipped)}"]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return _jsonable({
            "benchmark": self.benchmark, "title": self.title, "config": self.config,
            "summary": [{"method": r.method, "split": r.split, "pairs": r.pairs, **r.metrics} for r in self.rows],
            "pairs": self.per_pair, "skipped": list(self.skipped),
        })

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """``results.json`` (summary, per-pair arrays, config; non-finite numbers as null) and ``results.md``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        js, md = out / "results.json", out / "results.md"
        js.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False))
        md.write_text(self.to_markdown())
        return js, md


def _jsonable(value: Any) -> Any:
    """Nested dicts/lists/tuples/numpy values → plain JSON types; NaN and ±inf → None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer, bool, np.bool_)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def image_size(path: str | Path) -> tuple[int, int]:
    """(W, H) of an image file as :func:`loftr.io.read_image` would decode it (EXIF rotation applied), read
    from the header only."""
    from PIL import Image

    with Image.open(path) as img:
        w, h = img.size
        rotated = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    return (h, w) if rotated else (w, h)


def _load(image: ImageLike) -> ImageLike:
    return read_image(image) if isinstance(image, (str, Path)) else image


def evaluate(pairs: Sequence[P], matchers: Sequence[PairMatcher], score: Callable[[P, PairMatches], Record],
             *, desc: str = "eval", progress: bool = True) -> dict[str, list[Record]]:
    """Every matcher on every pair → ``{method: [record per pair]}``; a record holds name, split, matches,
    seconds (matching time) and the ``score`` of the pair."""
    names = [m.name for m in matchers]
    if len(set(names)) != len(names):
        raise LoFTRError(f"two matchers share a name: {names}")
    if not pairs:
        raise LoFTRError("no pairs to evaluate")
    records: dict[str, list[Record]] = {n: [] for n in names}
    for pair in tqdm(pairs, desc=desc, unit="pair", disable=not progress):
        image0, image1 = _load(pair.image0), _load(pair.image1)
        for matcher in matchers:
            start = time.perf_counter()
            matches = matcher(image0, image1)
            seconds = time.perf_counter() - start
            rec = {"name": pair.name, "split": pair.split, "matches": len(matches), "seconds": seconds}
            rec.update(score(pair, matches))
            records[matcher.name].append(rec)
            log.debug("%s %s: %d matches in %.2fs", matcher.name, pair.name, len(matches), seconds)
    return records


def summarise(records: dict[str, list[Record]], aggregate: Callable[[list[Record]], dict[str, float]],
              ) -> tuple[SummaryRow, ...]:
    """One row per method and split: "all", then each split (sorted) when there are several (none for a method
    without records). Mean matches and seconds are added to what ``aggregate`` gives."""
    rows = []
    for method, recs in records.items():
        if not recs:
            continue
        splits = sorted({r["split"] for r in recs})
        groups = [("all", recs)] + ([(s, [r for r in recs if r["split"] == s]) for s in splits]
                                    if len(splits) > 1 else [])
        for split, group in groups:
            metrics = dict(aggregate(group))
            metrics["matches"] = float(np.mean([r["matches"] for r in group]))
            metrics["seconds"] = float(np.mean([r["seconds"] for r in group]))
            rows.append(SummaryRow(method, split, len(group), metrics))
    return tuple(rows)


def per_pair_arrays(records: dict[str, list[Record]]) -> dict[str, dict[str, list[Any]]]:
    """``{method: [record, ...]}`` → ``{method: {key: [value per pair]}}``."""
    return {method: {k: [r.get(k) for r in recs] for k in (recs[0] if recs else {})}
            for method, recs in records.items()}


def run_benchmark(benchmark: str, title: str, loaded: Loaded[P], matchers: Sequence[PairMatcher],
                  score: Callable[[P, PairMatches], Record], aggregate: Callable[[list[Record]], dict[str, float]],
                  columns: Sequence[Column], *, config: dict[str, Any] | None = None, progress: bool = True,
                  ) -> BenchmarkResult:
    """:func:`evaluate`, then :func:`summarise`, packed into a :class:`BenchmarkResult`."""
    records = evaluate(loaded.pairs, matchers, score, desc=benchmark, progress=progress)
    return BenchmarkResult(benchmark, title, (*columns, *COMMON_COLUMNS), summarise(records, aggregate),
                           per_pair_arrays(records), dict(config or {}), loaded.skipped)


def mean_of(records: list[Record], key: str) -> float:
    """Mean of a per-pair value over the records (NaN for none)."""
    values = [r[key] for r in records]
    return float(np.mean(values)) if values else float("nan")


__all__ = ["EvalPair", "Loaded", "Column", "COMMON_COLUMNS", "SummaryRow", "BenchmarkResult", "evaluate",
           "summarise", "per_pair_arrays", "run_benchmark", "mean_of", "image_size"]
