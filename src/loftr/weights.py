"""Weights: the registry of known checkpoints, download with sha256 verification, and safe, strict loading.

Accepted files: official LoFTR Lightning checkpoints (``state_dict`` with a ``matcher.`` prefix), kornia's copies of
them, plain state dicts (``.pt``/``.pth``/``.ckpt``), and ``.safetensors`` (ours, fp16, with the preset in the
metadata). Pickles are opened with ``torch.load(weights_only=True)``: code inside a checkpoint is never executed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import logging
import math
import os
import pickle
import re
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from .config import LoFTRConfig
from .errors import WeightsError
from .model import LoFTR as Network

log = logging.getLogger(__name__)

FORMAT_VERSION = "1"


@dataclass(frozen=True)
class Checkpoint:
    """A known checkpoint: where it comes from and which preset it needs."""

    name: str
    preset: str
    filename: str
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    bundled: bool = False
    note: str = ""


_KORNIA_HF = "https://huggingface.co/kornia/loftr/resolve/main/"
_CMP = "https://cmp.felk.cvut.cz/~mishkdmy/models/"
_OFFICIAL_DRIVE = "https://drive.google.com/drive/folders/1xu2Pq6mZT5hmFgiYMBT9Zt8h1yO-3SIp"

REGISTRY: dict[str, Checkpoint] = {
    c.name: c
    for c in (
        Checkpoint("outdoor_ds", "outdoor_ds", "loftr_outdoor.ckpt", (_KORNIA_HF + "loftr_outdoor.ckpt", _CMP + "loftr_outdoor.ckpt"),
                   note="official MegaDepth dual-softmax model (kornia mirror)"),
        Checkpoint("indoor_ds", "indoor_ds", "loftr_indoor.ckpt", (_KORNIA_HF + "loftr_indoor.ckpt", _CMP + "loftr_indoor.ckpt"),
                   note="official ScanNet dual-softmax model (kornia mirror)"),
        Checkpoint("indoor_ds_new", "indoor_ds_new", "loftr_indoor_ds_new.ckpt",
                   (_KORNIA_HF + "loftr_indoor_ds_new.ckpt", _CMP + "loftr_indoor_ds_new.ckpt"),
                   note="official ScanNet dual-softmax model, fixed positional encoding (kornia mirror)"),
        Checkpoint("outdoor_ot", "outdoor_ot", "outdoor_ot.ckpt",
                   note=f"official MegaDepth optimal-transport model: Google Drive only ({_OFFICIAL_DRIVE})"),
        Checkpoint("indoor_ot", "indoor_ot", "indoor_ot.ckpt",
                   note=f"official ScanNet optimal-transport model: Google Drive only ({_OFFICIAL_DRIVE})"),
        Checkpoint("tiny_ds", "tiny_ds", "tiny_ds.safetensors", bundled=True,
                   note="ours: small model trained here (homographies, 3D scenes, teacher pairs), bundled"),
    )
}
DEFAULT = "tiny_ds"


def cache_dir() -> Path:
    """Where downloads go: $LOFTR_CACHE, else $TORCH_HOME/hub/checkpoints/loftr, else
    $XDG_CACHE_HOME/torch/hub/checkpoints/loftr, else ~/.cache/torch/hub/checkpoints/loftr."""
    if os.environ.get("LOFTR_CACHE"):
        return Path(os.environ["LOFTR_CACHE"])
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / "loftr"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "torch" / "hub" / "checkpoints" / "loftr"


def bundled_path(filename: str) -> Path:
    """Path of a weights file shipped inside the package (may not exist)."""
    return Path(str(resources.files("loftr") / "weights" / filename))


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def lookup(name: str) -> Checkpoint:
    key = DEFAULT if name == "default" else name
    if key not in REGISTRY:
        raise WeightsError(f"unknown weights {name!r}; known: default, {', '.join(REGISTRY)} (or give a file path)")
    return REGISTRY[key]


def download(name: str, *, force: bool = False, progress: bool = True, timeout: float = 30.0) -> Path:
    """The local file of registry entry ``name``: bundled, cached, or downloaded (mirrors tried in turn) into
    :func:`cache_dir` with a progress bar.

    A download goes to a temporary ``*.part`` file beside the target and is renamed into place only once it is
    complete (as long as the server's Content-Length), matches the entry's sha256 when one is known, and loads as a
    checkpoint; otherwise it is deleted and the next mirror is tried. The sha256 of every download is kept beside it
    (``NAME.sha256``), so a cached file that changed since is refused; ``*.part`` files that a killed process left
    behind are removed once they are an hour old."""
    ckpt = lookup(name)
    if ckpt.bundled:
        path = bundled_path(ckpt.filename)
        if not path.exists():
            raise WeightsError(f"the bundled weights {ckpt.filename} are missing from this installation ({path})")
        return path
    target = cache_dir() / ckpt.filename
    if target.exists() and not force:
        _verify(target, ckpt)
        return target
    if not ckpt.urls:
        raise WeightsError(f"{ckpt.name} has no direct download ({ckpt.note}); download it yourself and place it at "
                           f"{target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(target)
    errors = []
    for url in ckpt.urls:
        try:
            digest = _fetch(url, target, ckpt, progress=progress, timeout=timeout)
        except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError, WeightsError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
            continue
        _digest_path(target).write_text(digest + "\n")
        return target
    raise WeightsError(f"could not download {ckpt.name} ({'; '.join(errors)}). Offline? Get {ckpt.filename} from "
                       f"{ckpt.urls[0]} and place it at {target}, or pass its path with --weights")


STALE_PART_SECONDS = 3600.0


def _remove_stale_parts(target: Path) -> None:
    """Delete ``*.part`` files of ``target`` untouched for an hour (left by a killed download; a live one writes)."""
    for part in target.parent.glob(f"{target.name}*.part"):
        try:
            if time.time() - part.stat().st_mtime > STALE_PART_SECONDS:
                part.unlink()
                log.info("removed the stale partial download %s", part)
        except OSError:  # another process got there first
            continue


def _digest_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _fetch(url: str, target: Path, ckpt: Checkpoint, *, progress: bool, timeout: float) -> str:
    """Stream ``url`` to a temporary file beside ``target``, check it and rename it into place; its sha256."""
    from tqdm import tqdm

    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".part")
        try:
            h, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=target.name,
                                                  disable=not progress) as bar:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    out.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
            if total is not None and size != total:
                raise WeightsError(f"incomplete download: {size} of {total} bytes")
            digest = h.hexdigest()
            if ckpt.sha256 is not None and digest != ckpt.sha256:
                raise WeightsError(f"sha256 {digest} does not match the expected {ckpt.sha256}")
            read_state_dict(tmp, kind=target.suffix)  # a complete file that is no checkpoint is not kept either
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return digest


def _verify(path: Path, ckpt: Checkpoint) -> None:
    """A cached file must match the registry's sha256, else the one recorded when it was downloaded."""
    expected, source = ckpt.sha256, "the expected"
    if expected is None and _digest_path(path).is_file():
        expected, source = _digest_path(path).read_text().strip(), "the one recorded at download,"
    if expected is None:
        return
    digest = sha256_of(path)
    if digest != expected:
        path.unlink()
        _digest_path(path).unlink(missing_ok=True)
        raise WeightsError(f"{path}: sha256 {digest} does not match {source} {expected}; the file was removed, "
                           "download it again")


def read_state_dict(path: str | Path, *, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors of a checkpoint file, with keys as in :class:`loftr.LoFTR`, and its metadata (may be empty).

    ``kind`` (".safetensors" or another suffix) overrides the file's suffix. Every failure is a
    :class:`WeightsError` naming the file: missing, empty, truncated or corrupt, a pickle holding anything but
    tensors (refused without running it), no state dict inside."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.stat().st_size == 0:
        raise WeightsError(f"weights file {path} is empty (0 bytes)")
    if (kind or path.suffix) == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path} is not a valid safetensors file (truncated or corrupt?): "
                               f"{_first_line(exc)}") from None
        return remap_state_dict(state), meta
    try:
        with warnings.catch_warnings():  # torch warns about old formats and pickle protocols: we report problems
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise WeightsError(f"cannot read {path}: truncated or not a PyTorch checkpoint "
                               f"({_first_line(exc)})") from None
        found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(exc))
        detail = found.group(1).split(". Please")[0].strip()[:200] if found else "not a plain tensor pickle"
        raise WeightsError(f"refusing to load {path}: it holds Python objects other than tensors, which could run "
                           f"code when unpickled ({detail})") from None
    except Exception as exc:  # noqa: BLE001 - a truncated zip, a text file...: any failure means unusable
        raise WeightsError(f"cannot read {path}: truncated or not a PyTorch checkpoint ({type(exc).__name__}: "
                           f"{_first_line(exc).split('. ')[0][:200]})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} holds no state dict of tensors")
    return remap_state_dict(obj), {}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else "") or type(exc).__name__


def remap_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official/kornia key names → ours: strip a ``matcher.`` or ``module.`` prefix; drop the positional-encoding
    table (recomputed, and stored by some old checkpoints)."""
    out = {}
    for key, value in state.items():
        for prefix in ("matcher.", "module."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key == "pos_encoding.pe":
            continue
        out[key] = value
    return out


def load_weights(model: Network, weights: str | Path) -> Network:
    """Load a registry name or a file into ``model`` strictly, cast to the model's dtype; returns the model (eval)."""
    path = Path(weights)
    if not path.exists() and isinstance(weights, str) and ("/" not in weights and "\\" not in weights):
        path = download(weights)
    state, meta = read_state_dict(path)
    preset = model.preset or "custom config"
    if meta.get("preset") and model.preset and meta["preset"] != model.preset:
        raise WeightsError(f"{path.name} was trained for preset {meta['preset']!r}, not {model.preset!r}: "
                           f"use --preset {meta['preset']}")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise WeightsError(f"{path.name} does not fit preset {preset!r}: missing keys {_short(missing)}, "
                           f"unexpected keys {_short(unexpected)}")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if state[k].shape != v.shape]
    if wrong:
        raise WeightsError(f"{path.name} does not fit preset {preset!r}: shape mismatch in {_short(wrong)}")
    dtype = next(model.parameters()).dtype
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    bad = [k for k, v in cast.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise WeightsError(f"{path} is corrupt: {len(bad)} tensor(s) hold NaN or infinite values ({_short(bad)})")
    model.load_state_dict(cast, strict=True)
    if "fine_max_std" in meta:  # the file's own match filter (see LoFTRConfig.fine_max_std)
        model.config = dataclasses.replace(model.config, fine_max_std=_max_std_of(meta["fine_max_std"], path))
    return model.eval()


def _max_std_of(text: str, path: Path) -> float | None:
    """The ``fine_max_std`` metadata value of a weights file: a positive number, or "none"."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise WeightsError(f"{path.name} has an invalid fine_max_std in its metadata: {text!r} (a positive number "
                           "or 'none')")
    return value


def _short(items: list[str], limit: int = 6) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def save_safetensors(model: Network, path: str | Path, *, preset: str, extra: dict[str, str] | None = None,
                     dtype: torch.dtype = torch.float16) -> Path:
    """Write the model's weights as one safetensors file (fp16 by default) with preset and format metadata.
    BatchNorm counters (``num_batches_tracked``) are kept as integers."""
    from safetensors.torch import save_file

    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    meta = {"preset": preset, "format_version": FORMAT_VERSION, "library": "loftr"}
    if model.config.fine_max_std is not None:
        meta["fine_max_std"] = repr(float(model.config.fine_max_std))
    meta.update(extra or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)
    return path


def describe(path: str | Path) -> dict[str, object]:
    """What ``loftr weights info`` prints: size, sha256, tensor count, parameter count, metadata, fitting presets,
    and the tensors holding NaN or infinite values (a corrupt file: loading it is refused)."""
    from .config import PRESETS

    state, meta = read_state_dict(path)
    fits = []
    for name in PRESETS:
        own = Network(name).state_dict()
        if set(own) == set(state) and all(own[k].shape == state[k].shape for k in own):
            fits.append(name)
    return {
        "path": str(path),
        "bytes": Path(path).stat().st_size,
        "sha256": sha256_of(path),
        "tensors": len(state),
        "parameters": int(sum(v.numel() for k, v in state.items() if "num_batches_tracked" not in k)),
        "dtype": str(next(iter(state.values())).dtype).replace("torch.", "") if state else "-",
        "metadata": meta,
        "fits_presets": fits,
        "non_finite_tensors": [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()],
    }


class LoFTR(Network):
    """The kornia-compatible LoFTR module with its weights: :class:`loftr.model.LoFTR` plus ``weights``.

    Args:
        preset: name of a preset in :data:`loftr.config.PRESETS` (ignored when ``config`` is given).
        weights: None (random init), a file path, or a registry name (see :data:`REGISTRY`), loaded strictly
            (:func:`load_weights`).
        config: an explicit :class:`~loftr.config.LoFTRConfig`.

    >>> model = LoFTR("indoor_ds_new", weights="indoor_ds_new")   # eval mode
    """

    def __init__(self, preset: str = "outdoor_ds", weights: str | Path | None = None,
                 config: LoFTRConfig | None = None) -> None:
        super().__init__(preset, config=config)
        if weights is not None:
            load_weights(self, weights)


def registry_table() -> list[dict[str, object]]:
    """One row per registry entry, with whether a local copy exists."""
    rows = []
    for c in REGISTRY.values():
        local = bundled_path(c.filename) if c.bundled else cache_dir() / c.filename
        rows.append({"name": c.name + (" (default)" if c.name == DEFAULT else ""), "preset": c.preset,
                     "local": str(local) if local.exists() else "-", "source": "bundled" if c.bundled else
                     (c.urls[0] if c.urls else "manual"), "note": c.note})
    return rows


__all__ = ["LoFTR", "REGISTRY", "DEFAULT", "Checkpoint", "cache_dir", "download", "load_weights", "read_state_dict",
           "remap_state_dict", "save_safetensors", "describe", "registry_table", "sha256_of", "lookup"]
