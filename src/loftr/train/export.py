"""Export a training run (or one of its checkpoints) to an fp16 safetensors file, with a Markdown model card."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..errors import LoFTRError
from .runlog import format_duration, read_log, training_seconds


@dataclass(frozen=True)
class Exported:
    weights: Path
    card: Path | None
    preset: str
    step: int


def resolve_checkpoint(source: str | Path) -> Path:
    """A run folder → its ``last.pt``; a file → itself."""
    source = Path(source)
    if source.is_dir():
        last = source / "last.pt"
        if not last.is_file():
            raise LoFTRError(f"{source} holds no last.pt: not a training run folder")
        return last
    if not source.is_file():
        raise LoFTRError(f"{source} does not exist")
    return source


def _run_config(state: dict, ckpt: Path) -> dict[str, Any]:
    if isinstance(state.get("config"), dict):
        return state["config"]
    path = ckpt.parent / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def data_summary(cfg: dict[str, Any]) -> str:
    """One line for the weights' metadata: the run's data sources and the share of the batches each had.

    E.g. ``mixed: posed 0.45 (posed_train, cup-table held out), scenes 0.3, photos 0.25 (photos, extreme 0.3)``."""
    dataset = str(cfg.get("dataset", "photos"))
    photos = Path(str(cfg.get("images", ""))).name
    if dataset != "mixed":
        return f"{dataset}: {photos}"
    shares = {k: float(cfg.get(f"{k}_share", 0.0) or 0.0) for k in ("posed", "scene", "teacher")}
    parts = []
    if shares["posed"] > 0 and cfg.get("posed"):
        held = f", {cfg['posed_holdout']} held out" if cfg.get("posed_holdout") else ""
        taught = f", teacher matches of {len(str(cfg['posed_teacher']).split(','))} caches" if cfg.get(
            "posed_teacher") else ""
        zoom = float(cfg.get("posed_max_zoom", 1.8) or 1.8)
        zoomed = f", zoom to {zoom:g}" if zoom != 1.8 else ""
        parts.append(f"posed {shares['posed']:g} ({Path(str(cfg['posed'])).name}{held}{taught}{zoomed})")
    if shares["scene"] > 0:
        parts.append(f"scenes {shares['scene']:g}")
    if shares["teacher"] > 0 and cfg.get("teacher"):
        parts.append(f"teacher {shares['teacher']:g} ({Path(str(cfg['teacher'])).name})")
    rest = max(1.0 - sum(shares.values()), 0.0)
    if rest > 0:
        extreme = f", extreme {float(cfg['extreme_share']):g}" if cfg.get("extreme_share") else ""
        parts.append(f"photos {round(rest, 4):g} ({photos}{extreme})")
    spared = " (not the extreme views)" if cfg.get("extreme_share") and cfg.get("extreme_light") is False else ""
    relit = f"; one view relit in {float(cfg['hard_light']):g} of the photo and posed pairs{spared}" if cfg.get(
        "hard_light") else ""
    return "mixed: " + ", ".join(parts) + relit


def export_run(source: str | Path, out: str | Path, *, card: str | Path | None = None,
               accuracy: str | Path | None = None, preset: str | None = None) -> Exported:
    """Write the weights of a run folder or checkpoint as fp16 safetensors (preset and training step in the metadata)
    and, when ``card`` is given, a model card: data, steps, training time (from log.jsonl), the last validation
    metrics, and the free-form measured accuracy of the ``accuracy`` JSON file."""
    from ..model import LoFTR
    from ..weights import load_weights, save_safetensors, sha256_of
    from .config import architecture_overrides

    ckpt = resolve_checkpoint(source)
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a refusal
        raise LoFTRError(f"cannot read checkpoint {ckpt}: {type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise LoFTRError(f"{ckpt} is not a training checkpoint (no 'model' state)")
    cfg = _run_config(state, ckpt)
    preset = preset or state.get("preset") or cfg.get("preset")
    if not preset:
        raise LoFTRError(f"{ckpt} does not say its preset: pass --preset")
    from ..config import PRESETS

    if preset not in PRESETS:
        raise LoFTRError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    changed = architecture_overrides(cfg.get("model_overrides") or {})
    if changed:
        raise LoFTRError(f"the run overrides {', '.join(changed)} of preset {preset!r}: a safetensors file records "
                         "only the preset, so these weights cannot be exported as one")
    measured = None
    if accuracy:
        try:
            measured = json.loads(Path(accuracy).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise LoFTRError(f"cannot read the accuracy file {accuracy}: {exc}") from None
    model = load_weights(LoFTR(preset), ckpt)  # strict: a checkpoint of another preset is refused
    if state.get("fine_max_std") is not None:  # the run's match filter (from its --init weights) goes into the file
        model.config = replace(model.config, fine_max_std=float(state["fine_max_std"]))
    step = int(state.get("step", 0))
    extra = {"step": str(step), "source": ckpt.name}
    if cfg.get("dataset") or cfg.get("images"):
        extra["trained_on"] = data_summary(cfg)
    if cfg.get("init"):
        extra["init"] = Path(str(cfg["init"])).name  # the weights the run started from (their own file says more)
    weights = save_safetensors(model, out, preset=preset, extra=extra)
    card_path = None
    if card:
        text = model_card(weights, preset=preset, step=step, cfg=cfg, run_dir=ckpt.parent,
                          val=state.get("val") if isinstance(state.get("val"), dict) else None,
                          measured=measured, sha256=sha256_of(weights),
                          parameters=sum(p.numel() for p in model.parameters()))
        card_path = Path(card)
        card_path.parent.mkdir(parents=True, exist_ok=True)
        card_path.write_text(text)
    return Exported(weights, card_path, preset, step)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        rows = []
        for k, v in obj.items():
            rows += _flatten(v, f"{prefix}{k}" if not prefix else f"{prefix} / {k}")
        return rows
    return [(prefix or "value", obj)]


def model_card(weights: Path, *, preset: str, step: int, cfg: dict[str, Any], run_dir: Path,
               val: dict[str, Any] | None, measured: Any, sha256: str, parameters: int) -> str:
    """The Markdown model card of an exported run."""
    records, vals = ([], [])
    if (run_dir / "log.jsonl").is_file():
        records, vals = read_log(run_dir / "log.jsonl")
    if val is None:
        earlier = [v for v in vals if v["step"] <= step]
        val = earlier[-1] if earlier else None
    seconds = training_seconds(records, step) if records else None
    lines = [f"# {weights.stem}", "",
             f"LoFTR weights, preset `{preset}` ({parameters / 1e6:.2f} M parameters), fp16 safetensors "
             f"(`{weights.name}`, {weights.stat().st_size / 1e6:.1f} MB, sha256 `{sha256}`).", "",
             f"Load: `loftr.LoFTR(\"{preset}\", weights=\"{weights.name}\")` or "
             f"`loftr match A B --weights {weights.name}`.", "", "## Training", ""]
    dataset = cfg.get("dataset", "photos")
    data = {"photos": "homographic pairs of the photos in", "scannet": "ScanNet pairs under",
            "megadepth": "MegaDepth pairs under"}.get(dataset, dataset)
    if cfg:
        lines.append(f"- data: {data} `{cfg.get('images', '?')}`"
                     + (f", index `{cfg['index']}`" if cfg.get("index") else "")
                     + (f", size {cfg['size']}" if "size" in cfg else ""))
        lines.append(f"- steps: {step} of {cfg.get('steps', '?')}, batch {cfg.get('batch_size', '?')} pairs per "
                     f"process")
        lines.append(f"- optimiser: AdamW lr {cfg.get('lr', '?')}, weight decay {cfg.get('weight_decay', '?')}, "
                     f"{cfg.get('warmup', '?')} warm-up steps then cosine, gradient clipping {cfg.get('grad_clip', '?')}"
                     f"; {'sparse' if cfg.get('sparse') else 'dense'} coarse supervision"
                     + ("; bf16 backbone" if cfg.get("bf16") else "") + ("; fp16 backbone" if cfg.get("fp16") else ""))
    else:
        lines.append(f"- steps: {step}")
    lines.append(f"- training time: {format_duration(seconds)} (from log.jsonl)" if seconds is not None
                 else "- training time: unknown (no log.jsonl)")
    lines += ["", "## Validation", ""]
    if val:
        lines += [f"Last validation (step {val.get('step', step)}):", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in val.items() if k != "step"]
    else:
        lines.append("No validation was logged up to this step.")
    if measured is not None:
        lines += ["", "## Measured accuracy", ""]
        if isinstance(measured, dict):
            lines += ["| measurement | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in _flatten(measured)]
        else:
            lines += ["```json", json.dumps(measured, indent=2), "```"]
    return "\n".join(lines) + "\n"


def blend_weights(first: str | Path, second: str | Path, share: float, out: str | Path) -> Path:
    """Write ``(1 - share) * first + share * second``, tensor by tensor (BatchNorm statistics too; counters from
    ``first``), as fp16 safetensors: weight-space interpolation between a model and a fine-tuned copy of it, which
    can keep some of each one's strengths. Both files must be of one architecture; the preset and match filter are
    ``first``'s and the metadata names both parents with their shares."""
    from ..config import get_preset
    from ..model import LoFTR
    from ..weights import load_weights, read_state_dict, save_safetensors, sha256_of

    if not 0.0 <= share <= 1.0:
        raise LoFTRError(f"the share of the second file must be in [0, 1], got {share}")
    if Path(out).suffix != ".safetensors":
        raise LoFTRError(f"{out}: the blend is written as safetensors, so its name must end in .safetensors")
    (a, meta_a), (b, meta_b) = read_state_dict(first), read_state_dict(second)
    if not meta_a.get("preset") or meta_a.get("preset") != meta_b.get("preset") or a.keys() != b.keys() or any(
            a[k].shape != b[k].shape for k in a):
        raise LoFTRError(f"{first} and {second} are not weights of one architecture (presets "
                         f"{meta_a.get('preset')} and {meta_b.get('preset')})")
    model = load_weights(LoFTR(config=get_preset(meta_a["preset"])), first)  # first's match filter too
    model.load_state_dict({k: (1 - share) * a[k].float() + share * b[k].float() if a[k].is_floating_point() else a[k]
                           for k in a})
    parents = [f"{1 - share:g} of {Path(first).name} ({sha256_of(first)[:8]}: {meta_a.get('trained_on', '?')})",
               f"{share:g} of {Path(second).name} ({sha256_of(second)[:8]}: {meta_b.get('trained_on', '?')})"]
    return save_safetensors(model, out, preset=meta_a["preset"], extra={"trained_on": "blend: " + " + ".join(parents)})
