"""Sub-commands of the many-image pipeline: pairs, match-pairs, merge-matches, sfm, export onnx."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import PipelineError

SFM_MAX_SIZE = 640
"""Default longest side of the many-image commands (pairs, match-pairs, sfm): 640, not the two-image default of
1024 (:data:`loftr.io.DEFAULT_MAX_SIZE`). Measured with ``benchmarks/bench_sfm.py`` (20 KITTI frames, 1241×376,
bundled weights of 2026-11-30): ``loftr sfm`` registered 20/20 frames at 640 but 4/20 at 1024 (2/20 with
``--quantize 2``), measured before the mapper's bogus-camera filter was widened (:mod:`.colmap`), which may have
been what failed at 1024."""


def _add_pair_source(p: argparse.ArgumentParser, required: bool = True) -> None:
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--pairs", help="hloc pairs file: 'name0 name1' per line, names relative to IMAGES_DIR")
    src.add_argument("--exhaustive", action="store_true", help="every pair of images (sorted, i < j)")
    src.add_argument("--sequential", type=int, metavar="N", help="each image with its next N (sorted names)")
    src.add_argument("--retrieval", type=int, metavar="K",
                     help="each image with its K nearest by a global descriptor pooled from our backbone")


def _add_batch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=4, help="pairs per forward pass (same-size images; default 4)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes decoding images (default 0)")
    p.add_argument("--quantize", type=float, default=1.0,
                   help="grid in network-input pixels merging per-pair keypoints into per-image ones (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--two-way", action=argparse.BooleanOptionalAction, default=True,
                   help="refine each coarse match both ways (default; image0's cell in image1 and image1's in image0): "
                        "every grid keypoint of an image is then shared by all its pairs, which makes longer tracks")


def _pairs(args: argparse.Namespace, matcher=None) -> list[tuple[str, str]]:
    """The pairs the options ask for; none given (``loftr sfm``): :func:`~loftr.pipeline.pairs.auto_pairs`."""
    from .pairs import (auto_pairs, exhaustive_pairs, global_descriptors, list_images, read_pairs, retrieval_pairs,
                        sequential_pairs)

    names = list_images(args.images_dir)
    if not names:
        raise PipelineError(f"no images in {args.images_dir}")
    if args.pairs:
        return read_pairs(args.pairs, names)
    if args.exhaustive:
        return exhaustive_pairs(names)
    if args.sequential is not None:
        return sequential_pairs(names, args.sequential)

    def descriptors():
        from ..options import matcher_from_args

        return global_descriptors(matcher or matcher_from_args(args), [Path(args.images_dir) / n for n in names])

    if args.retrieval is None:
        return auto_pairs(names, descriptors)
    return retrieval_pairs(names, descriptors(), args.retrieval)


def cmd_pairs(args: argparse.Namespace) -> int:
    from .pairs import write_pairs

    pairs = _pairs(args)
    print(f"{len(pairs)} pairs written to {write_pairs(args.out, pairs)}")
    return 0


def _init_distributed(args: argparse.Namespace) -> bool:
    """Join the torchrun group when WORLD_SIZE > 1 (gloo); a GPU run uses the rank's local GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch
    import torch.distributed as dist

    if args.device in ("cuda", "auto") and torch.cuda.is_available():
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if not dist.is_initialized():
        dist.init_process_group("gloo")
        return True
    return False


def cmd_match_pairs(args: argparse.Namespace) -> int:
    from ..options import matcher_from_args
    from .batch import match_pairs

    started = _init_distributed(args)
    try:
        matcher = matcher_from_args(args, args.max_matches, two_way=args.two_way)
        pairs = _pairs(args, matcher)
        s = match_pairs(matcher, args.images_dir, pairs, args.out, batch_size=args.batch_size, workers=args.workers,
                        quantize=args.quantize, commit_every=args.commit_every, overwrite=args.overwrite,
                        progress=not args.no_progress)
    finally:
        if started:
            import torch.distributed as dist

            dist.destroy_process_group()
    if s.rank == 0:
        rate = s.matched / s.seconds if s.seconds > 0 else 0.0
        ranks = f" on {s.world_size} ranks" if s.world_size > 1 else ""
        print(f"{s.pairs} pairs: {s.matched} matched{ranks}, {s.skipped} already done ({rate:.1f} pairs/s); "
              f"written to {s.out}")
    return 0


def cmd_merge_matches(args: argparse.Namespace) -> int:
    from .h5 import merge_files

    out = merge_files(args.parts, args.out, args.quantize, force=args.force)
    print(f"merged {len(args.parts)} files into {out}")
    return 0


def cmd_sfm(args: argparse.Namespace) -> int:
    from ..options import matcher_from_args
    from .camera import parse_camera
    from .colmap import run_sfm

    camera = parse_camera(args.camera) if args.camera else None
    if args.refine_camera is not None and camera is None:
        raise PipelineError("--refine-camera / --no-refine-camera need --camera: without it the camera is refined")
    matcher = matcher_from_args(args, two_way=args.two_way)
    pairs = _pairs(args, matcher)
    r = run_sfm(matcher, args.images_dir, pairs, args.out, batch_size=args.batch_size, workers=args.workers,
                quantize=args.quantize, camera_mode=args.camera_mode, min_matches=args.min_matches,
                init_min_inliers=args.init_min_inliers, abs_pose_min_inliers=args.abs_pose_min_inliers,
                progress=not args.no_progress, camera=camera, refine_camera=args.refine_camera,
                min_inlier_ratio=args.min_inlier_ratio, refine_principal_point=args.refine_principal_point)
    if r.model_dir is None:
        print(f"no reconstruction: none of the {r.num_images} images could be registered")
        return 1
    focal = ", ".join(f"{f:.1f}" for f in r.focal_lengths)
    how = "self-calibrated" if camera is None else ("refined" if args.refine_camera else "given")
    print(f"registered {r.num_registered}/{r.num_images} images, {r.num_points3d} points, mean reprojection error "
          f"{r.mean_reprojection_error:.3f} px, mean track length {r.mean_track_length:.2f} "
          f"({r.num_models} model(s)), focal length {focal} px ({how}"
          f"{', principal point refined' if r.principal_point_refined else ''}); model written to {r.model_dir}")
    if camera is None:
        print("note: the focal length was found from the images alone; a forward-moving sequence cannot fix it "
              "(give --camera when the calibration is known)", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..options import matcher_from_args
    from .export import OnnxMatcher, compare_matches, export_onnx, fine_path

    if not args.dynamic and (args.height is None or args.width is None):
        raise PipelineError("give --height and --width, or --dynamic")
    matcher = matcher_from_args(args, fast=False)  # export_onnx traces the plain stages of any model
    coarse, fine = export_onnx(matcher.model, args.output, height=args.height, width=args.width,
                               dynamic=args.dynamic)
    print(f"coarse graph written to {coarse}, fine graph to {fine_path(coarse)}")
    if args.verify:
        from ..matcher import Matcher

        if args.dynamic:
            eager = Matcher(matcher.model, max_size=matcher.max_size, resize=matcher.resize, threshold=args.threshold,
                            max_std=args.max_std)
            runner = OnnxMatcher(coarse, max_size=matcher.max_size, threshold=args.threshold, max_std=args.max_std)
        else:
            eager = Matcher(matcher.model, resize=(args.width, args.height), threshold=args.threshold,
                            max_std=args.max_std)
            runner = OnnxMatcher(coarse, threshold=args.threshold, max_std=args.max_std)
        c = compare_matches(eager(*args.verify), runner(*args.verify))
        print(f"verify: eager {c['eager']} matches, onnx {c['other']}, in common {c['common']} "
              f"({100 * c['recall']:.1f}%), max keypoint1 difference {c['max_kpt1_diff_px']:.2e} px, "
              f"max confidence difference {c['max_conf_diff']:.2e}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the pipeline's sub-commands to the ``loftr`` parser."""
    from ..options import add_model_args
    from .colmap import MIN_INLIER_RATIO, PRINCIPAL_POINT_MIN_IMAGES
    from .pairs import AUTO_EXHAUSTIVE_MAX, AUTO_RETRIEVAL, AUTO_SEQUENTIAL

    p = sub.add_parser("pairs", help="write an hloc pairs file for a folder of images")
    p.add_argument("images_dir")
    _add_pair_source(p)
    p.add_argument("--out", required=True, help="pairs file to write")
    add_model_args(p, max_size=SFM_MAX_SIZE)
    p.set_defaults(func=cmd_pairs)

    p = sub.add_parser("match-pairs", help="match many pairs into one HDF5 file (resumable; torchrun for several "
                       "processes or GPUs)")
    p.add_argument("images_dir")
    _add_pair_source(p)
    p.add_argument("--out", required=True, help="HDF5 file to write (hloc-compatible keypoints and matches)")
    _add_batch_args(p)
    p.add_argument("--max-matches", type=int, help="keep the K most confident matches of each pair")
    p.add_argument("--commit-every", type=int, default=64, help="pairs between safe commits (default 64)")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    add_model_args(p, max_size=SFM_MAX_SIZE)
    p.set_defaults(func=cmd_match_pairs)

    p = sub.add_parser("merge-matches", help="merge part files (e.g. OUT.rank*.h5 of a distributed run) into one")
    p.add_argument("out", help="the merged HDF5 file to write")
    p.add_argument("parts", nargs="+", help="part, chunk or finished match files")
    p.add_argument("--quantize", type=float, default=1.0, help="per-image keypoint grid, network pixels (default 1)")
    p.add_argument("--force", action="store_true", help="merge files made with different settings")
    p.set_defaults(func=cmd_merge_matches)

    p = sub.add_parser("sfm", help="match, build a COLMAP database, verify and reconstruct (pycolmap)",
                       description="Without --pairs, --exhaustive, --sequential or --retrieval: every pair of up to "
                                   f"{AUTO_EXHAUSTIVE_MAX} images, else each image with its next {AUTO_SEQUENTIAL} "
                                   f"and its {AUTO_RETRIEVAL} nearest by retrieval.")
    p.add_argument("images_dir")
    _add_pair_source(p, required=False)  # default: auto_pairs (exhaustive for small sets)
    p.add_argument("--out", required=True, help="output folder: matches.h5, database.db, pairs.txt, sparse/")
    _add_batch_args(p)
    p.add_argument("--camera-mode", default="auto", choices=["auto", "single", "per_folder", "per_image"],
                   help="auto (default): one camera for the images of one folder with the same size and EXIF camera")
    p.add_argument("--min-matches", type=int, default=15, help="fewest verified matches of a pair (default 15)")
    p.add_argument("--min-inlier-ratio", type=float, default=MIN_INLIER_RATIO,
                   help=f"fewest inliers per match of a verified pair (default {MIN_INLIER_RATIO}: drops the "
                        "non-overlapping pairs LoFTR matches anyway)")
    p.add_argument("--init-min-inliers", type=int, default=30, help="fewest inliers of the initial pair")
    p.add_argument("--abs-pose-min-inliers", type=int, default=15, help="fewest inliers to register an image")
    p.add_argument("--camera", nargs="+", metavar="MODEL PARAMS | FILE",
                   help="known intrinsics in pixels of the original images, e.g. 'PINHOLE fx,fy,cx,cy' (any COLMAP "
                        "model), or a file: that line, a 3x3 K, or a COLMAP cameras.txt line")
    p.add_argument("--refine-camera", action=argparse.BooleanOptionalAction, default=None,
                   help="refine the --camera intrinsics in bundle adjustment (default: hold them fixed)")
    p.add_argument("--refine-principal-point", action=argparse.BooleanOptionalAction, default=None,
                   help="refine the principal point in a final bundle adjustment (default: when the intrinsics are "
                        f"refined and every camera holds at least {PRINCIPAL_POINT_MIN_IMAGES} registered images)")
    add_model_args(p, max_size=SFM_MAX_SIZE)
    p.set_defaults(func=cmd_sfm)

    p = sub.add_parser("export", help="export the model: `loftr export onnx OUT.onnx`")
    p.add_argument("format", choices=["onnx"])
    p.add_argument("output", help="coarse graph file; the fine graph goes beside it as OUT.fine.onnx")
    p.add_argument("--height", type=int, help="fixed input height (a multiple of the coarse stride)")
    p.add_argument("--width", type=int, help="fixed input width")
    p.add_argument("--dynamic", action="store_true", help="any input size (sides up to 2048 px)")
    p.add_argument("--verify", nargs=2, metavar=("IMAGE0", "IMAGE1"),
                   help="match a pair with onnxruntime and with the eager model, print the agreement")
    add_model_args(p)
    p.set_defaults(func=cmd_export)
