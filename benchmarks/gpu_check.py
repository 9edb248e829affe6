"""GPU check (issue 15): the GPU-marked tests, speed / peak GPU memory / match agreement against kornia, and
``match-pairs`` under torchrun, in one run of a few minutes; results as JSON and a Markdown table.

    bash benchmarks/gpu_check.sh                 # on the GPU machine: installs what is needed, then runs this
    python benchmarks/gpu_check.py --out DIR [--sizes 640x480,1600x1200] [--budget 420] [--cpu]

Parts, each in its own process with its own time limit (a part's unused time goes to the next ones; a failing or
timed-out part never stops the others), results rewritten under ``--out`` while they run:

- ``env``: torch, CUDA, cuDNN, GPU(s), package versions, TF32 settings, what ``device="auto"`` picks.
- ``tests``: ``pytest -m gpu`` (the GPU-marked tests; they skip without CUDA), log in ``pytest.txt``.
- ``bench WxH`` (one per size): the Motorcycle pair that scikit-image ships, resized to WxH. Our LoFTR (official
  ``outdoor_ds`` architecture, random weights with BatchNorm statistics measured on a photo, see ``common.py``) and
  kornia's with the same weights, fp32 and fp16/bf16 autocast, our reference and fast paths: median seconds per pair,
  pairs/s, peak GPU memory (``torch.cuda.max_memory_allocated`` of one match, weights included), matches, and
  agreement with the CPU fp32 result of our reference path. Then the same for the trained bundled ``tiny_ds`` (whose
  matches are not near-ties, so its agreement says what fp16/bf16 cost in practice).
- ``match-pairs``: ``loftr match-pairs`` of 28 pairs under torchrun: 2 processes (nccl/gloo as the command chooses)
  on 2 GPUs when there are 2, else 1 process; on one GPU also 2 processes sharing it (``--device cuda:0``).

``--cpu`` runs exactly this code on the CPU: nothing is faked, the CUDA-only steps (peak GPU memory, the GPU tests,
the shared-GPU run) are skipped, so that the plumbing can be tested on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# part -> share of the time budget (scaled to --budget)
SHARES = {"env": 25, "tests": 135, "bench small": 90, "bench large": 125, "match-pairs": 65}
OURS = ("ours reference", "ours fast")
DTYPES = ("fp32", "fp16", "bf16")
# timed in this order (the most important first, in case the part runs out of time)
CONFIGS = ("ours reference fp32", "ours fast fp32", "kornia fp32", "ours fast fp16", "ours fast bf16",
           "ours reference fp16", "ours reference bf16", "kornia fp16", "kornia bf16")


# -- small helpers ---------------------------------------------------------------------------------------------------
def write_json(path: Path, obj: object) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def parse_size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()[:600]


# -- the parent: runs the parts, merges their results, writes JSON + Markdown ----------------------------------------
class Report:
    def __init__(self, out: Path, args: argparse.Namespace) -> None:
        self.out = out
        self.data: dict = {"issue": 15, "mode": "cpu" if args.cpu else "cuda", "started": _now(),
                           "budget_s": args.budget, "sizes": args.sizes, "argv": sys.argv[1:], "finished": False,
                           "parts": {}, "results": {}}

    def write(self) -> None:
        self.data["updated"] = _now()
        write_json(self.out / "gpu_check.json", self.data)
        (self.out / "gpu_check.md").write_text(markdown(self.data))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_part(cmd: list[str], timeout: float, log, env: dict, on_tick=None) -> tuple[str, int | None]:
    """Runs ``cmd`` in its own process group with stdout/stderr to ``log``; kills the whole group after
    ``timeout`` s. Returns (status, returncode); ``on_tick`` is called every few seconds while it runs."""
    log.write(f"\n== {' '.join(cmd)} (limit {timeout:.0f} s)\n")
    log.flush()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    end = time.monotonic() + timeout
    while True:
        try:
            rc = proc.wait(timeout=max(0.1, min(5.0, end - time.monotonic())))
            return ("ok" if rc == 0 else "failed"), rc
        except subprocess.TimeoutExpired:
            if on_tick is not None:
                on_tick()
            if time.monotonic() >= end:
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    try:
                        os.killpg(proc.pid, sig)
                    except ProcessLookupError:
                        break
                    try:
                        proc.wait(timeout=5)
                        break
                    except subprocess.TimeoutExpired:
                        continue
                return "timeout", None


def parent(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.work:
        work = Path(args.work).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        import tempfile

        work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    report = Report(out, args)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    parts = [("env", SHARES["env"]), ("tests", SHARES["tests"])]
    for size in sizes:
        w, h = parse_size(size)
        parts.append((f"bench {size}", SHARES["bench large" if w * h > 1_000_000 else "bench small"]))
    parts.append(("match-pairs", SHARES["match-pairs"]))
    if args.parts:
        wanted = {p.strip() for p in args.parts.split(",")}
        parts = [(n, s) for n, s in parts if n in wanted or n.split()[0] in wanted]
    scale = args.budget / sum(s for _, s in parts)
    t0 = time.monotonic()
    deadline = t0 + args.budget
    planned = t0
    env = dict(os.environ)
    env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # lets the deterministic-algorithms test use cuBLAS
    if args.cpu:  # no part may see a GPU, even on a machine that has one (the GPU tests then skip)
        env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    common_flags = ["--work", str(work), "--runs", str(args.runs), "--thr", str(args.thr), "--threads",
                    str(args.threads)] + (["--cpu"] if args.cpu else [])
    with open(out / "gpu_check.log", "a") as log:
        for name, share in parts:
            planned += share * scale
            limit = min(planned, deadline) - time.monotonic()
            entry = {"status": "running", "limit_s": round(limit, 1)}
            report.data["parts"][name] = entry
            if limit < 3:
                entry["status"] = "skipped (no time left)"
                report.write()
                continue
            report.write()
            start = time.monotonic()
            try:
                status, rc, results = _one_part(name, limit, args, work, out, env, common_flags, log, report, entry,
                                                start)
            except Exception as exc:  # the driver itself must go on to the next part
                status, rc, results = "error", None, {"error": error_text(exc)}
                traceback.print_exc(file=log)
            entry.update(status=status, rc=rc, seconds=round(time.monotonic() - start, 1))
            if status != "ok":
                entry["log_tail"] = _tail(out / ("pytest.txt" if name == "tests" else "gpu_check.log"))
            report.data["results"][name] = results
            report.write()
            print(f"[gpu_check] {name}: {status} in {entry['seconds']} s", flush=True)
    report.data["finished"] = True
    report.data["elapsed_s"] = round(time.monotonic() - t0, 1)
    report.write()
    if not args.work:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print((out / "gpu_check.md").read_text())
    return 0


def _one_part(name: str, limit: float, args: argparse.Namespace, work: Path, out: Path, env: dict,
              common_flags: list[str], log, report: Report, entry: dict, start: float) -> tuple[str, int | None, dict]:
    """Runs one part (pytest, or this script as a child) within ``limit`` s; returns (status, rc, results)."""
    result_file = work / (re.sub(r"\W+", "_", name) + ".json")
    if name == "tests":
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", *args.tests.split(","), "-p", "no:cacheprovider",
               "-rA", "-v", "--continue-on-collection-errors", f"--junitxml={work / 'junit.xml'}"]
        with open(out / "pytest.txt", "w") as plog:
            status, rc = run_part(cmd, limit, plog, env)
        results = summarize_pytest(work / "junit.xml", out / "pytest.txt")
        counts = results["counts"]
        if status == "failed" and not counts.get("failed") and not counts.get("error") and (
                counts.get("passed") or counts.get("skipped")):
            status = "ok"  # only modules that could not be imported here (optional dependencies)
    else:
        child_args = ["--child", name.split()[0]] + (["--size", name.split()[1]] if name.startswith("bench") else [])
        cmd = [sys.executable, str(Path(__file__).resolve()), *child_args, "--result", str(result_file),
               *common_flags]

        def tick(name: str = name, result_file: Path = result_file) -> None:
            report.data["results"][name] = read_json(result_file)
            entry["seconds"] = round(time.monotonic() - start, 1)
            report.write()

        status, rc = run_part(cmd, limit, log, env, on_tick=tick)
        results = read_json(result_file)
    return status, rc, results


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def summarize_pytest(junit: Path, text_log: Path) -> dict:
    """Counts and per-test outcomes from the JUnit XML (or, when pytest was killed, from its -v log)."""
    tests: dict[str, dict] = {}
    if junit.exists():
        import xml.etree.ElementTree as ET

        try:
            for case in ET.parse(junit).getroot().iter("testcase"):
                name = f"{case.get('classname', '')}::{case.get('name', '')}".lstrip(":")
                outcome, message = "passed", ""
                for tag in ("failure", "error", "skipped"):
                    node = case.find(tag)
                    if node is not None:
                        outcome = {"failure": "failed"}.get(tag, tag)
                        if tag == "error" and not case.get("classname"):
                            outcome = "collection error"  # a test module that could not be imported
                        text = f"{node.get('message') or ''}\n{node.text or ''}"
                        text = [x for x in text.splitlines() if x.strip()]
                        message = (text[-1] if outcome == "collection error" else text[0])[:300] if text else ""
                        break
                tests[name] = {"outcome": outcome, "seconds": round(float(case.get("time", 0)), 2), "message": message}
        except Exception as exc:  # a half-written file
            tests["<junit>"] = {"outcome": "error", "message": error_text(exc)}
    if not tests:
        for line in _tail(text_log, 400).splitlines():
            m = re.match(r"(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)", line)
            if m:
                tests[m.group(1)] = {"outcome": m.group(2).lower(), "message": ""}
    counts: dict[str, int] = {}
    for t in tests.values():
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    summary = next((line for line in reversed(_tail(text_log, 5).splitlines()) if " in " in line and "=" in line), "")
    return {"counts": counts, "summary": summary.strip("= "), "tests": tests}


# -- the children -----------------------------------------------------------------------------------------------------
def child_env(args: argparse.Namespace) -> dict:
    import torch

    import loftr
    from loftr.matcher import resolve_device

    res: dict = {"python": platform.python_version(), "torch": torch.__version__, "cuda_build": torch.version.cuda,
                 "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count(),
                 "torch_threads": torch.get_num_threads(), "loftr": str(Path(loftr.__file__).parent),
                 "device_auto": str(resolve_device("auto"))}
    for mod in ("kornia", "kornia_rs", "numpy", "cv2", "skimage", "safetensors", "h5py", "onnxruntime", "pytest",
                "hypothesis", "tqdm", "matplotlib", "setuptools"):
        try:
            m = __import__(mod)
            res[mod] = getattr(m, "__version__", "?")
        except Exception as exc:
            res[mod] = f"missing ({type(exc).__name__})"
    try:
        res["tf32"] = {"cudnn_conv": getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None),
                       "cuda_matmul": getattr(torch.backends.cuda.matmul, "fp32_precision", None),
                       "float32_matmul_precision": torch.get_float32_matmul_precision()}
    except Exception as exc:
        res["tf32"] = error_text(exc)
    if torch.cuda.is_available():
        res["cudnn"] = torch.backends.cudnn.version()
        res["gpus"] = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            res["gpus"].append({"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                                "capability": f"{p.major}.{p.minor}", "sms": p.multi_processor_count})
        try:
            res["bf16_supported"] = torch.cuda.is_bf16_supported()
            res["nccl"] = str(torch.cuda.nccl.version())
            res["nccl_available"] = torch.distributed.is_nccl_available()
        except Exception as exc:
            res["nccl"] = error_text(exc)
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        res["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        res["nvidia_smi"] = f"not run ({type(exc).__name__})"
    return res


class Bench:
    """Times configurations on one device; keeps their (CPU) outputs for the agreement with the CPU reference."""

    def __init__(self, device, runs: int, cap_s: float, save) -> None:
        import torch

        self.torch, self.device, self.runs, self.cap_s, self.save = torch, device, runs, cap_s, save
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def call(self, model, data: dict, dtype: str) -> dict:
        torch = self.torch
        with torch.inference_mode():
            if dtype == "fp32":
                out = model(data)
            else:
                with torch.autocast(self.device.type, dtype=getattr(torch, {"fp16": "float16"}.get(dtype, "bfloat16"))):
                    out = model(data)
        return out

    def measure(self, model, img0, img1, dtype: str) -> tuple[dict, dict]:
        torch = self.torch
        data = {"image0": img0.to(self.device), "image1": img1.to(self.device)}
        out = self.call(model, data, dtype)  # warm-up (cuDNN algorithm choice, autocast weight casts)
        if self.cuda:  # a second one on the GPU, where the first calls are much slower than the later ones
            self.sync()
            self.call(model, data, dtype)
            self.sync()
        stats: dict = {}
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            self.call(model, data, dtype)
            self.sync()
            stats["base_mib"] = round(base / 2**20, 1)
            stats["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        times: list[float] = []
        for _ in range(self.runs):
            self.sync()
            start = time.perf_counter()
            self.call(model, data, dtype)
            self.sync()
            times.append(time.perf_counter() - start)
            if sum(times) > self.cap_s:
                break
        med = statistics.median(times)
        stats.update(seconds=round(med, 5), min_s=round(min(times), 5), runs=len(times),
                     pairs_per_s=round(1.0 / med, 2), matches=int(len(out["keypoints0"])),
                     finite=bool(all(torch.isfinite(out[k].float()).all() for k in ("keypoints0", "keypoints1",
                                                                                    "confidence"))))
        return stats, {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu() for k, v in out.items()}

    def free(self) -> None:
        import gc

        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()


def build(name: str, ours, theirs, device):
    """The model of configuration ``name`` (without its dtype) on ``device``, from the CPU originals."""
    from loftr.model.optimize import optimize_for_inference

    if name.startswith("kornia"):
        if theirs is None:
            raise RuntimeError("kornia is not available")
        return copy.deepcopy(theirs).to(device).eval()
    model = copy.deepcopy(ours).to(device).eval()
    # the fast path as Matcher(fast=True) builds it off the CPU: float32 weights, autocast for fp16/bf16
    return optimize_for_inference(model) if name.startswith("ours fast") else model


def child_bench(args: argparse.Namespace, result: Path) -> None:
    import torch

    sys.path.insert(0, str(HERE))
    import common

    from loftr import LoFTR

    device = torch.device("cpu" if args.cpu else "cuda")
    size = parse_size(args.size)
    res: dict = {"size": args.size, "device": str(device), "image": "skimage Motorcycle (left, right), grey, resized",
                 "weights": "outdoor_ds architecture, random weights, BatchNorm statistics from skimage astronaut",
                 "thr": args.thr, "configs": {}, "tiny_ds": {}}

    def save() -> None:
        write_json(result, res)

    save()
    if device.type == "cuda" and not torch.cuda.is_available():
        res["error"] = "CUDA is not available"
        save()
        raise SystemExit(1)
    img0, img1 = common.motorcycle_pair(size)
    calibration = common.grey_tensor(common.skimage_grey("astronaut"), (320, 240))
    ours = common.calibrated_model(thr=args.thr, calibration=calibration)
    try:
        theirs = common.kornia_model(ours, thr=args.thr)
    except Exception as exc:
        theirs, res["kornia_error"] = None, error_text(exc)
    tiny = LoFTR("tiny_ds", weights="tiny_ds")
    # outdoor_ds: speed against kornia; tiny_ds (trained): what fp16/bf16 and the fast path cost in matches that
    # are not near-ties
    tiny_configs = [f"{n} {d}" for n in OURS for d in DTYPES]
    for label, model, theirs_, table, configs, runs, cap in (
            ("outdoor_ds", ours, theirs, res["configs"], CONFIGS, args.runs, 5.0),
            ("tiny_ds", tiny, None, res["tiny_ds"], tiny_configs, min(args.runs, 5), 2.0)):
        # first the CPU fp32 result of our reference path, which every configuration is compared with
        try:
            start = time.perf_counter()
            with torch.inference_mode():
                ref = model({"image0": img0, "image1": img1})
            res[f"cpu_fp32_reference_{label}"] = {"seconds": round(time.perf_counter() - start, 3),
                                                  "matches": int(len(ref["keypoints0"])),
                                                  "threads": torch.get_num_threads()}
        except Exception as exc:
            ref, res[f"cpu_fp32_reference_{label}"] = None, {"error": error_text(exc)}
            traceback.print_exc()
        save()
        bench = Bench(device, runs, cap_s=cap if device.type == "cuda" else cap / 4, save=save)
        for config in configs:
            name, dtype = config.rsplit(" ", 1)
            net = None
            try:
                net = build(name, model, theirs_, device)
                table[config], out = bench.measure(net, img0, img1, dtype)
                if ref is not None:
                    table[config]["agreement_cpu_fp32"] = round(common.agreement(ref, out), 4)
                    err = common.max_keypoint_error(ref, out)
                    table[config]["max_kp_diff_px"] = None if err == float("inf") else float(f"{err:.3g}")
            except Exception as exc:
                table[config] = {"error": error_text(exc)}
                traceback.print_exc()
            net = None
            bench.free()
            kornia_s = table.get("kornia fp32", {}).get("seconds")
            for stats in table.values():
                if kornia_s and "seconds" in stats:
                    stats["ratio_to_kornia_fp32"] = round(stats["seconds"] / kornia_s, 3)
            save()


def write_images(folder: Path, size: tuple[int, int]) -> list[str]:
    """8 same-size grey images: the Motorcycle pair and 3 shifted crops of each (28 exhaustive pairs)."""
    import cv2
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for side, image in zip("lr", data.stereo_motorcycle()[:2]):
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        h, w = grey.shape
        for k, (x, y) in enumerate([(0, 0), (w // 10, 0), (0, h // 10), (w // 10, h // 10)]):
            crop = grey[y:y + h - h // 10, x:x + w - w // 10] if k else grey
            names.append(f"moto_{side}{k}.png")
            cv2.imwrite(str(folder / names[-1]), cv2.resize(crop, size, interpolation=cv2.INTER_AREA))
    return names


def child_match_pairs(args: argparse.Namespace, result: Path) -> None:
    import torch

    cuda = not args.cpu
    gpus = torch.cuda.device_count() if cuda else 0
    res: dict = {"gpus": gpus, "runs": []}
    write_json(result, res)
    size = (640, 480) if cuda else (96, 72)
    images = Path(args.work) / "match_pairs_images"
    res["images"] = f"{len(write_images(images, size))} images {size[0]}x{size[1]} (Motorcycle pair and crops)"
    common = ["--exhaustive", "--max-size", str(max(size)), "--batch-size", "4", "--no-progress", "--overwrite"]
    runs = []
    if not cuda:
        runs.append(("1 process, cpu", 1, ["--device", "cpu"]))
    elif gpus >= 2:
        runs.append(("2 processes, cuda:LOCAL_RANK", 2, ["--device", "cuda", "--dtype", "fp16"]))
    else:
        runs.append(("1 process, cuda", 1, ["--device", "cuda", "--dtype", "fp16"]))
    if cuda and gpus == 1:  # more ranks than GPUs: both use GPU 0 (exercises the multi-rank merge on a GPU)
        runs.append(("2 processes sharing cuda:0", 2, ["--device", "cuda:0", "--dtype", "fp16"]))
    if not cuda:
        runs.append(("2 processes, cpu (gloo)", 2, ["--device", "cpu"]))
    counts: dict[str, dict] = {}
    for label, nproc, extra in runs:
        out = Path(args.work) / f"match_pairs_{nproc}_{len(res['runs'])}.h5"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "loftr.cli", "match-pairs", str(images), "--out", str(out), *common, *extra]
        entry: dict = {"run": label, "nproc": nproc, "cmd": " ".join(cmd[1:])}
        res["runs"].append(entry)
        write_json(result, res)  # (a run killed by the part's time limit still shows)
        start = time.perf_counter()
        try:
            env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
            entry.update(rc=proc.returncode, wall_s=round(time.perf_counter() - start, 2))
            print(proc.stdout[-3000:], proc.stderr[-5000:], sep="\n", flush=True)
            summary = [line for line in proc.stdout.splitlines() if " pairs: " in line]
            entry["summary"] = summary[-1] if summary else (proc.stderr.strip().splitlines() or ["no output"])[-1][:400]
            m = re.search(r"\(([\d.]+) pairs/s\)", entry["summary"])
            entry["pairs_per_s"] = float(m.group(1)) if m else None
            if proc.returncode == 0 and out.exists():
                from loftr.pipeline.h5 import read_raw

                raw = read_raw(out)
                counts[label] = {k: len(r.confidence) for k, r in raw.items()}
                entry["pairs_in_file"] = len(raw)
                entry["matches_total"] = sum(counts[label].values())
        except Exception as exc:
            entry["error"] = error_text(exc)
            traceback.print_exc()
        write_json(result, res)
    if len(counts) >= 2:
        (a, ca), (b, cb) = list(counts.items())[:2]
        same = [k for k in ca if ca[k] == cb.get(k)]
        res["same_match_counts"] = f"{len(same)}/{len(ca)} pairs ({a} vs {b})"
    write_json(result, res)


# -- Markdown ---------------------------------------------------------------------------------------------------------
def _f(v, fmt: str = "{:.3g}") -> str:
    if v is None:
        return "-"
    return fmt.format(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def markdown(data: dict) -> str:
    lines = [f"# GPU check ({data.get('mode')}), {data.get('started')}", ""]
    env = data["results"].get("env", {})
    if env:
        gpus = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in env.get("gpus", [])) or "no GPU"
        lines += [f"{gpus}; torch {env.get('torch')} (CUDA {env.get('cuda_build')}, cuDNN {env.get('cudnn', '-')}), "
                  f"python {env.get('python')}, kornia {env.get('kornia')}, {env.get('cpu_count')} CPUs; "
                  f"device='auto' -> {env.get('device_auto')}; TF32: {env.get('tf32')}", ""]
    lines += ["| part | status | seconds | limit (s) |", "|---|---|---|---|"]
    for name, p in data["parts"].items():
        lines.append(f"| {name} | {p.get('status')} | {_f(p.get('seconds'))} | {_f(p.get('limit_s'))} |")
    tests = data["results"].get("tests")
    if tests:
        lines += ["", f"## GPU tests: {tests.get('summary') or tests.get('counts')}", ""]
        skipped: dict[str, int] = {}
        for t in tests.get("tests", {}).values():
            if t["outcome"] == "skipped":
                skipped[t.get("message") or "?"] = skipped.get(t.get("message") or "?", 0) + 1
        if skipped:
            lines += ["skipped: " + "; ".join(f"{n} ({why})" for why, n in skipped.items()), ""]
        bad = {n: t for n, t in tests.get("tests", {}).items() if t["outcome"] not in ("passed", "skipped")}
        if bad:
            lines += ["| test | outcome | message |", "|---|---|---|"]
            lines += [f"| {n} | {t['outcome']} | {t.get('message', '')[:200].replace('|', '/')} |"
                      for n, t in bad.items()]
    for name, res in data["results"].items():
        if not name.startswith("bench") or not res:
            continue
        lines += ["", f"## {name} on {res.get('device')}: {res.get('weights')}, thr {res.get('thr')}", ""]
        if res.get("kornia_error"):
            lines.append(f"kornia: {res['kornia_error']}\n")
        for title, table, ref in (("outdoor_ds (random weights)", res.get("configs", {}), "outdoor_ds"),
                                  ("tiny_ds (trained, bundled)", res.get("tiny_ds", {}), "tiny_ds")):
            if not table:
                continue
            cpu = res.get(f"cpu_fp32_reference_{ref}", {})
            lines += [f"{title}; CPU fp32 reference: {_f(cpu.get('seconds'))} s, {cpu.get('matches', '-')} matches "
                      f"({cpu.get('threads', '-')} threads){' ' + cpu['error'] if 'error' in cpu else ''}", "",
                      "| configuration | s/pair | pairs/s | ratio to kornia fp32 | peak GPU MiB | matches | "
                      "agreement with CPU fp32 | max dkp (px) |", "|---|---|---|---|---|---|---|---|"]
            for config, s in table.items():
                if "error" in s:
                    lines.append(f"| {config} | error: {s['error'][:150].replace('|', '/')} |||||||")
                    continue
                lines.append(f"| {config} | {_f(s.get('seconds'), '{:.4f}')} | {_f(s.get('pairs_per_s'))} | "
                             f"{_f(s.get('ratio_to_kornia_fp32'))} | {_f(s.get('peak_gpu_mib'), '{:.0f}')} | "
                             f"{s.get('matches')}{'' if s.get('finite', True) else ' (non-finite!)'} | "
                             f"{_f(s.get('agreement_cpu_fp32'))} | {_f(s.get('max_kp_diff_px'))} |")
            lines.append("")
    mp = data["results"].get("match-pairs")
    if mp:
        lines += ["", f"## match-pairs under torchrun ({mp.get('gpus')} GPUs; {mp.get('images', '')})", "",
                  "| run | rc | wall (s) | pairs/s | pairs in file | matches | summary |",
                  "|---|---|---|---|---|---|---|"]
        for r in mp.get("runs", []):
            lines.append(f"| {r['run']} | {r.get('rc')} | {_f(r.get('wall_s'))} | {_f(r.get('pairs_per_s'))} | "
                         f"{r.get('pairs_in_file', '-')} | {r.get('matches_total', '-')} | "
                         f"{(r.get('summary') or r.get('error') or '').replace('|', '/')[:200]} |")
        if mp.get("same_match_counts"):
            lines.append(f"\nsame match counts: {mp['same_match_counts']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "out" / "gpu_check"),
                        help="folder of gpu_check.json, gpu_check.md, gpu_check.log, pytest.txt (default $OUT)")
    parser.add_argument("--cpu", action="store_true", help="run everything on the CPU, skipping the CUDA-only steps")
    parser.add_argument("--sizes", default="640x480,1600x1200", help="WxH of the benchmark pairs, comma-separated")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for all parts together")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per configuration (fewer past a time cap)")
    parser.add_argument("--thr", type=float, default=1e-6, help="coarse threshold of the random-weight benchmark")
    parser.add_argument("--tests", default="tests", help="test paths for `pytest -m gpu`, comma-separated")
    parser.add_argument("--parts", default=None, help="only these parts (env, tests, bench, match-pairs)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a new temporary folder)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads of the parts (0: torch's default)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--size", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None:
        return parent(args)
    result = Path(args.result)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.child == "env":
        write_json(result, child_env(args))
    elif args.child == "bench":
        child_bench(args, result)
    elif args.child == "match-pairs":
        child_match_pairs(args, result)
    else:
        raise SystemExit(f"unknown part {args.child}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
