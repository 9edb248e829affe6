"""``python -m loftr.train IMAGES OUT_DIR [--steps N ...]``: the same as ``loftr train``."""

from __future__ import annotations

import argparse
import dataclasses
import logging

from .trainer import TrainConfig, train


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="loftr train", description=__doc__)
    parser.add_argument("images", help="folder of photos (searched recursively)")
    parser.add_argument("out_dir", help="checkpoints, log.jsonl; an existing last.pt is resumed")
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("images", "out_dir"):
            continue
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    return parser


def run(args: argparse.Namespace) -> int:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    last = train(cfg)
    print(f"last checkpoint: {last}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(build_parser().parse_args()))
