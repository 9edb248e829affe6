"""The plumbing of benchmarks/gpu_check.sh (the GPU check of issue 15), run with ``--cpu`` on tiny images: every part
runs for real on the CPU (the CUDA-only steps skipped) and the JSON and Markdown reports are complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_script_runs_every_part_on_the_cpu(tmp_path: Path) -> None:
    pytest.importorskip("kornia")
    pytest.importorskip("h5py")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from gpu_check import CONFIGS
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    out = tmp_path / "out"
    # budgets far above the ~60 s this takes on an idle machine: a busy one must not turn parts into timeouts
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(out), GPU_CHECK_SITE=str(tmp_path / "site"),
               GPU_CHECK_LIMIT="1500")
    cmd = ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu", "--sizes", "64x48", "--runs", "1",
           "--threads", "1", "--budget", "1400", "--tests", "tests/test_gpu.py"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md", "pytest.txt"]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["mode"] == "cpu" and report["finished"]
    assert {name: p["status"] for name, p in report["parts"].items()} == {
        "env": "ok", "tests": "ok", "bench 64x48": "ok", "match-pairs": "ok"}
    results = report["results"]
    assert results["env"]["device_auto"] == "cpu" and results["env"]["cuda_available"] is False
    assert results["tests"]["counts"].get("skipped", 0) >= 10 and set(results["tests"]["counts"]) == {"skipped"}
    bench = results["bench 64x48"]
    assert list(bench["configs"]) == list(CONFIGS)
    for table in (bench["configs"], bench["tiny_ds"]):
        for config, stats in table.items():
            assert "error" not in stats, (config, stats)
            assert stats["seconds"] > 0 and stats["pairs_per_s"] > 0 and "peak_gpu_mib" not in stats  # CUDA only
            assert 0.0 <= stats["agreement_cpu_fp32"] <= 1.0 and stats["finite"], config
    assert bench["configs"]["ours reference fp32"]["agreement_cpu_fp32"] == 1.0
    assert bench["configs"]["kornia fp32"]["ratio_to_kornia_fp32"] == 1.0
    assert len(bench["tiny_ds"]) == 6
    runs = results["match-pairs"]["runs"]
    assert [r["nproc"] for r in runs] == [1, 2] and all(r["rc"] == 0 and r["pairs_in_file"] == 28 for r in runs)
    assert results["match-pairs"]["same_match_counts"].startswith("28/28")
    md = (out / "gpu_check.md").read_text()
    assert "| ours fast fp16 |" in md and "| kornia fp32 |" in md and "## match-pairs under torchrun" in md
