"""The ``loftr`` command: match, weights, train (and more, one sub-command each).

Exit codes: 0 success; 1 a user error (bad argument, unusable image or checkpoint, missing file, not enough memory):
one line ``loftr: error: ...`` on stderr; 2 an internal error (a bug): one line asking to report it, with the
traceback only under ``--debug`` or ``LOFTR_DEBUG=1``; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from .errors import LoFTRError
from .options import add_model_args, matcher_from_args

EXIT_OK, EXIT_USER, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 130

# Modules that add sub-commands: each defines ``register(subparsers)``, which adds its parsers with
# ``set_defaults(func=...)``; a func takes the parsed args and returns an exit code.
SUBCOMMAND_MODULES = ("loftr.eval.cli", "loftr.pipeline.cli", "loftr.inspect", "loftr.serve", "loftr.train.cli")


def save_matches(matches, path: str | Path) -> Path:
    """keypoints0, keypoints1 (float32, original pixels) and confidence to .npz or .json."""
    import numpy as np

    path = Path(path)
    arrays = matches.numpy()
    arrays.pop("batch_indexes")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    elif path.suffix == ".json":
        path.write_text(json.dumps({k: v.tolist() for k, v in arrays.items()}))
    else:
        raise LoFTRError(f"--save-matches must end in .npz or .json, got {path.name}")
    return path


def cmd_match(args: argparse.Namespace) -> int:
    _run_match(args)
    return 0


def _run_match(args: argparse.Namespace):
    """Shared by match and demo: match, print the count, write what was asked for; returns the Matches."""
    from .io import read_image, to_grey

    if args.out and Path(args.out).suffix.lower() not in (".pdf", ".png", ".svg"):
        raise LoFTRError(f"--out must end in .pdf, .png or .svg, got {Path(args.out).name}")
    if args.save_matches and Path(args.save_matches).suffix not in (".npz", ".json"):
        raise LoFTRError(f"--save-matches must end in .npz or .json, got {Path(args.save_matches).name}")
    images = [read_image(p) for p in (args.image0, args.image1)]  # a bad file is reported before loading the model
    matcher = matcher_from_args(args, args.max_matches)
    matches = matcher(images[0], images[1], names=(args.image0, args.image1))
    print(f"Matches: {len(matches)}")
    if args.save_matches:
        print(f"matches written to {save_matches(matches, args.save_matches)}")
    if args.out:
        from .viz import plot_matches

        m = matches.numpy()
        plot_matches(to_grey(images[0]).numpy(), to_grey(images[1]).numpy(), m["keypoints0"], m["keypoints1"],
                     m["confidence"], path=args.out)
        print(f"figure written to {args.out}")
    return matches


def cmd_demo(args: argparse.Namespace) -> int:
    """Match the Middlebury Motorcycle stereo pair that scikit-image ships, score it against its GT disparity."""
    from .eval.stereo import motorcycle, precision, stereo_errors

    pair = motorcycle()
    args.image0, args.image1 = str(pair.left), str(pair.right)
    args.max_matches = None
    matches = _run_match(args)
    m = matches.numpy()
    p = precision(stereo_errors(m["keypoints0"], m["keypoints1"], pair.disparity))
    print(f"Motorcycle (Middlebury 2014), against GT disparity: precision@1px {p['precision@1px']:.3f}, "
          f"precision@3px {p['precision@3px']:.3f} over {p['with_ground_truth']} matches with ground truth")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from . import weights

    if args.action == "list":
        rows = weights.registry_table()
        for r in rows:
            print(f"{r['name']:<20} preset={r['preset']:<14} local={r['local']}\n{'':<20} {r['note']}")
    elif args.action == "download":
        if not args.target:
            raise LoFTRError("usage: loftr weights download NAME")
        print(weights.download(args.target))
    elif args.action == "export":
        if not args.target or not args.output:
            raise LoFTRError("usage: loftr weights export CHECKPOINT OUT.safetensors --preset P")
        preset = args.preset or weights.read_state_dict(args.target)[1].get("preset") or "outdoor_ds"
        model = weights.LoFTR(preset, weights=args.target)
        out = weights.save_safetensors(model, args.output, preset=preset)
        print(f"{out} ({out.stat().st_size / 1e6:.1f} MB, fp16, preset {preset}, sha256 {weights.sha256_of(out)})")
    elif args.action == "info":
        if not args.target:
            raise LoFTRError("usage: loftr weights info PATH")
        print(json.dumps(weights.describe(args.target), indent=2))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with the exit codes above: a usage error is one line on stderr and exit code 1."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="loftr", description="LoFTR detector-free image matching",
                     epilog="exit codes: 0 success, 1 user error (one line on stderr), 2 internal error (please "
                     "report it; --debug or LOFTR_DEBUG=1 prints the traceback), 130 interrupted")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    parser.add_argument("--debug", action="store_true", help="print the traceback of any error (as LOFTR_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("match", help="match two images; print the count, write the figure and/or the matches")
    p.add_argument("image0")
    p.add_argument("image1")
    add_model_args(p)
    p.add_argument("--max-matches", type=int, help="keep the K most confident matches")
    p.add_argument("--out", help="figure file (.pdf, .png or .svg)")
    p.add_argument("--save-matches", help="matches file (.npz or .json)")
    p.set_defaults(func=cmd_match)

    p = sub.add_parser("demo", help="offline demo: match the Motorcycle stereo pair scikit-image ships, score it "
                       "against its ground-truth disparity, write the figure")
    add_model_args(p)
    p.add_argument("--out", default="motorcycle_matches.pdf", help="figure file (.pdf, .png or .svg)")
    p.add_argument("--save-matches", help="matches file (.npz or .json)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("weights", help="known checkpoints: list, download NAME, info PATH, export CKPT OUT")
    p.add_argument("action", choices=["list", "download", "info", "export"])
    p.add_argument("target", nargs="?", help="NAME for download, PATH for info and export")
    p.add_argument("output", nargs="?", help="export: the .safetensors file to write")
    p.add_argument("--preset", help="export: the preset of the checkpoint (read from it when stored)")
    p.set_defaults(func=cmd_weights)

    import importlib

    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
                # a real missing dependency inside the module: report it
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``loftr`` command; returns the exit code (see the module doc)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # -h (0) or a usage error (1, already printed as one line)
        return exc.code if isinstance(exc.code, int) else EXIT_USER
    debug = args.debug or os.environ.get("LOFTR_DEBUG", "") not in ("", "0")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("loftr: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (LoFTRError, OSError) as exc:  # bad input, or a file the system refuses (missing, permissions, disk full)
        return _fail(EXIT_USER, f"loftr: error: {_one_line(exc)}", debug)
    except MemoryError:
        return _fail(EXIT_USER, "loftr: error: out of memory: use a smaller --max-size or --max-pixels", debug)
    except RuntimeError as exc:
        if _is_out_of_memory(exc):
            return _fail(EXIT_USER, f"loftr: error: out of memory ({_one_line(exc)[:200]}): use a smaller --max-size "
                         "or --max-pixels", debug)
        return _internal(exc, debug)
    except Exception as exc:  # noqa: BLE001 - anything else is a bug: say so in one line
        return _internal(exc, debug)


def _fail(code: int, line: str, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(line, file=sys.stderr)
    return code


def _internal(exc: BaseException, debug: bool) -> int:
    how = "with the traceback above" if debug else "with the traceback that --debug (or LOFTR_DEBUG=1) prints"
    return _fail(EXIT_INTERNAL, f"loftr: internal error: {type(exc).__name__}: {_one_line(exc)[:300]} -- this is a "
                 f"bug in loftr, please report it {how}", debug)


_WRAPPED = re.compile(r"^[\w.]+(?:Error|Exception|Exit)\w*: (.+)$")


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line. An error re-raised from a DataLoader worker carries the worker's
    traceback: its last line holds the original message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) > 1 and (found := _WRAPPED.match(lines[-1])):
        return found.group(1)
    return " ".join(lines)


def _is_out_of_memory(exc: RuntimeError) -> bool:
    text = str(exc).lower()
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text or "can't allocate memory" in text


if __name__ == "__main__":
    raise SystemExit(main())
