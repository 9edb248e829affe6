"""Reading log.jsonl (resumed runs, older runs without elapsed time) and the training-curve figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loftr.train.plot import plot_run, smooth
from loftr.train.runlog import format_duration, read_log, training_seconds


def _write(run: Path, lines: list) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "log.jsonl").write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")


def test_read_log_keeps_the_last_record_of_each_step(tmp_path: Path) -> None:
    _write(tmp_path, [
        {"loss": 2.0, "step": 10, "sec_per_step": 1.0},
        {"loss": 1.5, "step": 20, "sec_per_step": 2.0},
        {"val": {"precision@1px": 0.1, "step": 20}},
        {"loss": 1.4, "step": 30, "sec_per_step": 2.0},  # written, then the process was killed before a checkpoint
        '{"loss": 1.3, "st',  # ... mid-line
        {"loss": 1.45, "step": 30, "sec_per_step": 3.0},  # the resumed run redoes step 30
        {"val": {"precision@1px": 0.2, "step": 40}},
    ])
    records, vals = read_log(tmp_path)
    assert [r["step"] for r in records] == [10, 20, 30] and records[-1]["loss"] == 1.45
    assert [v["precision@1px"] for v in vals] == [0.1, 0.2]
    # no "elapsed" (an older run): sec_per_step times the steps of each interval
    assert training_seconds(records) == 10 * 1.0 + 10 * 2.0 + 10 * 3.0
    assert training_seconds(records, up_to_step=20) == 30.0
    assert training_seconds(records + [{"loss": 1.0, "step": 40, "elapsed": 99.5}]) == 99.5
    assert format_duration(6720) == "1 h 52 min" and format_duration(200) == "3 min 20 s"
    with pytest.raises(FileNotFoundError):
        read_log(tmp_path / "missing")


def test_smoothing_is_a_bias_corrected_moving_average() -> None:
    np.testing.assert_allclose(smooth([3.0, 3.0, 3.0], 0.9), [3.0, 3.0, 3.0])
    got = smooth([1.0, 0.0], 0.5)
    np.testing.assert_allclose(got, [1.0, (0.25 * 1.0) / 0.75])
    assert np.array_equal(smooth([1.0, 5.0], 0.0), [1.0, 5.0])


def test_training_curve_figure(tmp_path: Path) -> None:
    losses = [1.0 / (1 + 0.1 * k) for k in range(30)]
    _write(tmp_path, [{"loss": v, "loss_c": v * 0.8, "loss_f": v * 0.2, "step": 10 * (k + 1)}
                      for k, v in enumerate(losses)]
           + [{"val": {"precision@1px": 0.2 + 0.1 * k, "precision@3px": 0.5 + 0.1 * k, "step": 100 * (k + 1)}}
              for k in range(3)])
    fig = plot_run(tmp_path, weight=0.8)
    ax, ax2 = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["loss (smoothed 0.8)"].get_ydata(), smooth(losses, 0.8))
    np.testing.assert_allclose(lines["loss"].get_xdata(), np.arange(10, 310, 10))
    assert ax.get_yscale() == "log" and "fine (smoothed)" in lines
    val = {line.get_label(): line for line in ax2.get_lines()}
    np.testing.assert_allclose(val["validation precision@3px"].get_xdata(), [100, 200, 300])
    np.testing.assert_allclose(val["validation precision@1px"].get_ydata(), [0.2, 0.3, 0.4])
    assert ax2.get_ylim() == (0.0, 1.0)
