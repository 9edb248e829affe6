"""The model and matching options of every ``loftr`` sub-command that matches images, defined once.

Every sub-command that builds a :class:`~loftr.matcher.Matcher` (``match``, ``demo``, ``match-pairs``, ``sfm``,
``pairs``, ``export``, ``eval BENCH``, ``serve``, ``pca``, ``attention``) adds these options with
:func:`add_model_args` and builds its matcher with :func:`matcher_from_args`, so an option added here reaches all of
them at once.

>>> parser = argparse.ArgumentParser()
>>> add_model_args(parser)
>>> matcher = matcher_from_args(parser.parse_args(["--max-size", "840"]))   # fast inference path by default

The matcher takes the fast inference path unless ``--reference`` is given (the plain module, what training runs).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from .io import DEFAULT_MAX_SIZE, MAX_PIXELS

if TYPE_CHECKING:
    from .matcher import Matcher

__all__ = ["add_model_args", "matcher_from_args", "matcher_kwargs"]


def add_model_args(p: argparse.ArgumentParser, *, max_size: int | None = DEFAULT_MAX_SIZE,
                   size_help: str | None = None) -> None:
    """Adds the model options (``--model`` | ``--weights``, ``--preset``), the sizes (``--resize`` | ``--max-size``,
    ``--max-pixels``), ``--threshold``, ``--max-std``, ``--device``, ``--dtype``, ``--reference`` and
    ``--rotations``, ``--scales``, ``--search-below`` to ``p``.

    ``max_size`` is the default of ``--max-size`` (the many-image commands use 640); ``None`` leaves the size to the
    caller (a benchmark's protocol), which then says in ``size_help`` what the default is.
    """
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default="default", help="registry name of the weights (see `loftr weights list`)")
    src.add_argument("--weights", help="a checkpoint file (official .ckpt, kornia, .pt/.pth, .safetensors)")
    p.add_argument("--preset", help="model preset the weights need (outdoor_ds, indoor_ds, indoor_ds_new, "
                   "outdoor_ot, indoor_ot, tiny_ds); read from the file's metadata when absent")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--resize", nargs=2, type=int, metavar=("W", "H"), help="resize both images to W x H")
    size.add_argument("--max-size", type=int, default=max_size,
                      help=f"longest image side (default {size_help or max_size}; 0 = keep)")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                   help=f"limit on the pixels of each network input: larger ones are downscaled with a warning "
                   f"(default {MAX_PIXELS}; 0 = no limit, at the risk of running out of memory)")
    p.add_argument("--threshold", type=float, help="coarse confidence threshold (default: the preset's, 0.2)")
    p.add_argument("--max-std", type=float, help="drop matches whose fine heat map is spread wider than this "
                   "(window units: 0 sharp, 1.41 flat; at most 20%% of a pair's matches go; default: the weights' "
                   "own, 0.95 for the bundled model, none for the official ones; 0 = keep every match)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"],
                   help="fp32 (exact), or fp16/bf16 (autocast; on the CPU bf16 gives bfloat16 weights)")
    path = p.add_mutually_exclusive_group()
    path.add_argument("--reference", action="store_true",
                      help="match with the plain reference module (what training runs) instead of the fast "
                      "inference copy, which computes the official formulas: the same matches as kornia's LoFTR with "
                      "keypoints within 1e-4 px (the fast copy: within 1e-3 px); about twice the time")
    path.add_argument("--fast", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    p.add_argument("--rotations", type=int, default=1, choices=[1, 2, 4],
                   help="test-time rotation: match image1 turned by 0/90/180/270 degrees (4; 2 = 0/180) and keep the "
                   "rotation with the most geometrically verified matches (default 1: no rotation)")
    p.add_argument("--scales", type=float, nargs="+", default=[], metavar="F",
                   help="test-time scale: also match with each image in turn shrunk by each factor below 1 (e.g. "
                   "0.5, for views whose scale differs by 2x or more) and keep the candidate with the most "
                   "geometrically verified matches; two more matches per factor (default: none)")
    p.add_argument("--search-below", type=int, metavar="N",
                   help="search the --rotations/--scales candidates only for a pair with fewer than N verified "
                   "matches as given, so that pairs that match well cost no extra matches (default: search every pair)")


def matcher_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~loftr.matcher.Matcher` keyword arguments of parsed :func:`add_model_args` options (a namespace
    without some of them gets the defaults)."""
    resize = getattr(args, "resize", None)
    max_size = getattr(args, "max_size", DEFAULT_MAX_SIZE)
    max_pixels = getattr(args, "max_pixels", MAX_PIXELS)
    return {
        "weights": getattr(args, "weights", None),
        "preset": getattr(args, "preset", None),
        "resize": tuple(resize) if resize else None,
        "max_size": None if resize or not max_size else max_size,
        "max_pixels": max_pixels or None,
        "threshold": getattr(args, "threshold", None),
        "max_std": getattr(args, "max_std", None),
        "device": getattr(args, "device", "cpu"),
        "dtype": getattr(args, "dtype", "fp32"),
        "fast": not getattr(args, "reference", False),
        "rotations": getattr(args, "rotations", 1),
        "scales": tuple(getattr(args, "scales", None) or ()),
        "search_below": getattr(args, "search_below", None),
    }


def matcher_from_args(args: argparse.Namespace, max_matches: int | None = None, **overrides: Any) -> "Matcher":
    """The :class:`~loftr.matcher.Matcher` of parsed :func:`add_model_args` options; ``overrides`` replace any of
    its keyword arguments (e.g. ``fast=False`` for a command that needs the plain module)."""
    from .matcher import Matcher

    kwargs = {**matcher_kwargs(args), "max_matches": max_matches, **overrides}
    return Matcher(getattr(args, "model", "default"), **kwargs)
