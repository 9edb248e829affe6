"""``loftr eval BENCH``: run LoFTR and the baselines on a benchmark, write results.json + results.md, print the
table. Benchmarks: pose (ScanNet-1500 / MegaDepth-1500), posed (real scenes with known cameras), homography
(HPatches), wxbs, stereo, synthetic."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

import cv2
import torch

from ..errors import LoFTRError
from ..io import DEFAULT_MAX_SIZE
from ..options import add_model_args, matcher_from_args
from .baselines import LoFTRMatcher, PairMatcher, build_baselines, parse_baselines
from .report import BenchmarkResult

log = logging.getLogger(__name__)

# where the shared data folder is looked for when no path is given (first that exists)
SHARED_DATA = ("$LOFTR_SHARED_DATA", "../shared/data", "/work/shared/data")


def shared_data(name: str) -> Path | None:
    """``name`` under the first existing shared data folder of :data:`SHARED_DATA`, or None."""
    for base in SHARED_DATA:
        if base.startswith("$"):
            base = os.environ.get(base[1:], "")
            if not base:
                continue
        path = Path(base) / name
        if path.exists():
            return path.resolve()
    return None


def _data_root(given: str | None, name: str, what: str) -> Path:
    if given:
        return Path(given)
    found = shared_data(name)
    if found is None:
        raise LoFTRError(f"no {what} folder given and none found in the shared data ({', '.join(SHARED_DATA)}); "
                         "pass it as an argument")
    return found


def _sizes(args: argparse.Namespace, resize: tuple[int, int] | None, max_size: int | None,
           ) -> tuple[tuple[int, int] | None, int | None]:
    """(resize, max_size) to match at: the user's (--resize, or --max-size with 0 = keep) or the benchmark's."""
    if args.resize:
        return (int(args.resize[0]), int(args.resize[1])), None
    if args.max_size is None:
        return resize, None if resize else max_size
    return None, args.max_size or None


def _loftr_name(args: argparse.Namespace) -> str:
    from ..weights import lookup

    return f"LoFTR ({Path(args.weights).name})" if args.weights else f"LoFTR ({lookup(args.model).name})"


def _matchers(args: argparse.Namespace, resize: tuple[int, int] | None, max_size: int | None) -> list[PairMatcher]:
    """LoFTR (the chosen model) then the baselines, all matching at the same size."""
    names = () if args.no_baselines else parse_baselines(args.baselines)
    args.resize, args.max_size = (list(resize) if resize else None), (max_size or 0)
    loftr = LoFTRMatcher(matcher_from_args(args), _loftr_name(args))
    return [loftr, *build_baselines(names, resize=resize, max_size=max_size, device=args.device)]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _pose_protocol(protocol: Any, args: argparse.Namespace) -> Any:
    """A pose protocol with the --ransac-threshold, --orders and --seed (of the shuffles) of the command line."""
    from dataclasses import replace

    threshold = protocol.ransac_threshold if args.ransac_threshold is None else args.ransac_threshold
    return replace(protocol, ransac_threshold=threshold, orders=args.orders, shuffle_seed=args.seed)


def _seed(seed: int) -> None:
    cv2.setRNGSeed(seed)
    torch.manual_seed(seed)


def _config(args: argparse.Namespace, resize: tuple[int, int] | None, max_size: int | None, **extra: Any,
            ) -> dict[str, Any]:
    return {"model": None if args.weights else args.model, "weights": args.weights, "preset": args.preset,
            "resize": list(resize) if resize else None, "max_size": max_size, "threshold": args.threshold,
            "device": args.device, "dtype": args.dtype, "reference": args.reference,
            "rotations": args.rotations, "scales": list(args.scales), "search_below": args.search_below,
            "max_pixels": args.max_pixels, "baselines": [] if args.no_baselines else
            list(parse_baselines(args.baselines)), "limit": args.limit, "seed": args.seed, **extra}


def _finish(result: BenchmarkResult, args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path("loftr_eval") / result.benchmark
    js, md = result.write(out)
    print(result.to_markdown())
    print(f"results written to {js} and {md}")
    return 0


# ----------------------------------------------------------------------------------------------- sub-commands
def cmd_pose(args: argparse.Namespace) -> int:
    from . import pose

    protocol = _pose_protocol(pose.PROTOCOLS[args.dataset], args)
    if args.dataset == "scannet":
        loaded = pose.read_scannet(args.index, args.root, args.intrinsics)
    else:
        loaded = pose.read_megadepth(args.index, args.root, args.npz_dir)
    _seed(args.seed)
    resize, max_size = _sizes(args, protocol.resize, protocol.max_size)
    config = _config(args, resize, max_size, index=args.index, root=args.root)
    result = pose.run(loaded.limited(args.limit), _matchers(args, resize, max_size), protocol,
                      progress=not args.no_progress, config=config)
    return _finish(result, args)


def cmd_posed(args: argparse.Namespace) -> int:
    from . import posed

    root = _data_root(args.root, "posed", "posed-scenes")
    protocol = _pose_protocol(posed.PROTOCOL, args)
    loaded = posed.read_posed(root, args.gaps, args.stride, args.scenes)
    _seed(args.seed)
    resize, max_size = _sizes(args, None, protocol.max_size)
    config = _config(args, resize, max_size, root=str(root), gaps=list(args.gaps), stride=args.stride,
                     scenes=args.scenes)
    result = posed.run(loaded.limited(args.limit), _matchers(args, resize, max_size), protocol,
                       progress=not args.no_progress, config=config)
    return _finish(result, args)


def cmd_homography(args: argparse.Namespace) -> int:
    from . import homography

    protocol = homography.HomographyProtocol(ransac_threshold=args.ransac_threshold,
                                             eval_short_side=args.eval_short_side or None)
    loaded = homography.read_hpatches(args.root)
    _seed(args.seed)
    resize, max_size = _sizes(args, None, 640)
    result = homography.run(loaded.limited(args.limit), _matchers(args, resize, max_size), protocol,
                            progress=not args.no_progress, config=_config(args, resize, max_size, root=args.root))
    return _finish(result, args)


def cmd_wxbs(args: argparse.Namespace) -> int:
    from . import wxbs

    root = _data_root(args.root, "wxbs", "WxBS")
    protocol = wxbs.WxBSProtocol(method=args.method, ransac_threshold=args.ransac_threshold)
    loaded = wxbs.read_wxbs(root)
    _seed(args.seed)
    resize, max_size = _sizes(args, None, DEFAULT_MAX_SIZE)
    result = wxbs.run(loaded.limited(args.limit), _matchers(args, resize, max_size), protocol,
                      progress=not args.no_progress, config=_config(args, resize, max_size, root=str(root)))
    return _finish(result, args)


def cmd_stereo(args: argparse.Namespace) -> int:
    from . import middlebury

    loaded = middlebury.read_pairs(args.root)
    _seed(args.seed)
    resize, max_size = _sizes(args, None, DEFAULT_MAX_SIZE)
    result = middlebury.run(loaded.limited(args.limit), _matchers(args, resize, max_size),
                            progress=not args.no_progress,
                            config=_config(args, resize, max_size, root=args.root or "motorcycle"))
    return _finish(result, args)


def cmd_synthetic(args: argparse.Namespace) -> int:
    from . import synthetic

    root = _data_root(args.root, "photos", "photo")
    cfg = synthetic.SyntheticConfig(size=args.size)
    loaded = synthetic.read_synthetic(root, seed=args.seed, limit=args.limit, cfg=cfg)
    _seed(args.seed)
    resize, max_size = _sizes(args, None, DEFAULT_MAX_SIZE)
    result = synthetic.run(loaded, _matchers(args, resize, max_size), progress=not args.no_progress,
                           config=_config(args, resize, max_size, root=str(root)), cfg=cfg)
    return _finish(result, args)


# ---------------------------------------------------------------------------------------------------- parsers
def _pose_options(p: argparse.ArgumentParser) -> None:
    """The estimator options of ``pose`` and ``posed``."""
    p.add_argument("--ransac-threshold", type=float, help="essential-matrix threshold in pixels (default 0.5)")
    p.add_argument("--orders", type=_positive_int, default=1, help="also run the estimator on N-1 seeded shuffles "
                   "of each pair's matches and report the AUC's mean over the N orders (RANSAC is chaotic in the "
                   "order: one run moves a scene's AUC by points; default 1)")


def _common(p: argparse.ArgumentParser, default_size: str) -> None:
    add_model_args(p, max_size=None, size_help=default_size)  # None = the benchmark's default size, told in the help
    p.add_argument("--baselines", default="sift,orb",
                   help="comma-separated baselines to run too: sift, orb, lightglue, aliked (ALIKED+LightGlue; "
                        "lightglue and aliked are optional packages, skipped with a warning when they do not "
                        "import) (default: sift,orb)")
    p.add_argument("--no-baselines", action="store_true", help="run LoFTR only")
    p.add_argument("--limit", type=int, help="evaluate the first N pairs only")
    p.add_argument("--seed", type=int, default=0, help="seed of RANSAC, of the match-order shuffles of --orders "
                   "(another seed: other orders, so new RANSAC samples) and of the synthetic pairs (default 0)")
    p.add_argument("--out", help="output folder for results.json and results.md (default loftr_eval/BENCH)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``loftr eval BENCH`` to the ``loftr`` command."""
    p = subparsers.add_parser("eval", help="benchmarks: pose, posed, homography, wxbs, stereo, synthetic (LoFTR and "
                              "baselines; writes results.json and results.md, prints the table)")
    bench = p.add_subparsers(dest="benchmark", required=True, metavar="BENCH")

    b = bench.add_parser("pose", help="relative pose on ScanNet-1500 or MegaDepth-1500 (LoFTR's index files)")
    b.add_argument("--dataset", choices=["scannet", "megadepth"], required=True)
    b.add_argument("--index", required=True, help="ScanNet test.npz; MegaDepth scene-info .npz, folder of them, "
                   "or list file of their names")
    b.add_argument("--root", required=True, help="image root (ScanNet: scene folders; MegaDepth: the folder "
                   "holding Undistorted_SfM)")
    b.add_argument("--intrinsics", help="ScanNet intrinsics.npz (default: next to the index)")
    b.add_argument("--npz-dir", help="MegaDepth: folder of the scene-info files of a list file (default: its folder)")
    _pose_options(b)
    _common(b, "scannet 640x480 (--resize), megadepth 840")
    b.set_defaults(func=cmd_pose)

    b = bench.add_parser("posed", help="relative pose on real multi-view scenes with known cameras (fox, castle): "
                         "pairs at several frame gaps, AUC@5/10/20 per scene")
    b.add_argument("root", nargs="?", help="folder of scenes (images/ + cameras.json each) or one scene (default: "
                   "the shared data's posed)")
    b.add_argument("--gaps", type=int, nargs="+", default=[1, 2, 4, 8], help="frame gaps of the pairs (default 1 2 4 8)")
    b.add_argument("--stride", type=int, default=3, help="a pair starts every STRIDE views (default 3)")
    b.add_argument("--scenes", nargs="+", help="only these scenes (folder names)")
    _pose_options(b)
    _common(b, str(DEFAULT_MAX_SIZE))
    b.set_defaults(func=cmd_posed)

    b = bench.add_parser("homography", help="HPatches: corner-error AUC, illumination and viewpoint splits")
    b.add_argument("root", help="HPatches folder (i_* and v_* sequences)")
    b.add_argument("--ransac-threshold", type=float, default=3.0, help="in evaluation pixels (default 3)")
    b.add_argument("--eval-short-side", type=int, default=480, help="errors measured with images scaled to this "
                   "shorter side (default 480, as LoFTR; 0 = original pixels)")
    _common(b, "640")
    b.set_defaults(func=cmd_homography)

    b = bench.add_parser("wxbs", help="WxBS: F from the matches vs ground-truth correspondences, per category")
    b.add_argument("root", nargs="?", help="WxBS folder (default: the shared data's wxbs)")
    b.add_argument("--method", default="magsac", choices=["magsac", "ransac", "lmeds"])
    b.add_argument("--ransac-threshold", type=float, default=1.0, help="in original pixels (default 1)")
    _common(b, str(DEFAULT_MAX_SIZE))
    b.set_defaults(func=cmd_wxbs)

    b = bench.add_parser("stereo", help="rectified pairs with GT disparity: precision at 1/3 px")
    b.add_argument("root", nargs="?", help="Middlebury scene folder or folder of scenes (default: the Motorcycle "
                   "pair scikit-image ships)")
    _common(b, str(DEFAULT_MAX_SIZE))
    b.set_defaults(func=cmd_stereo)

    b = bench.add_parser("synthetic", help="random homographies of photos, generated in memory with --seed")
    b.add_argument("root", nargs="?", help="photo folder (default: the shared data's photos)")
    b.add_argument("--size", type=int, default=640, help="longest side of the generated images (default 640)")
    _common(b, str(DEFAULT_MAX_SIZE))
    b.set_defaults(func=cmd_synthetic)


__all__ = ["register", "shared_data"]
