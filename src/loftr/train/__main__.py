"""``python -m loftr.train IMAGES OUT_DIR [--steps N ...]``: train on a photo folder; an existing ``OUT_DIR/last.pt`` is
resumed. (``loftr train`` does the same with ``--data``/``--out``, a ``--config`` file, and an explicit ``--resume``.)"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from .cli import add_config_flags
from .config import TrainConfig
from .trainer import train


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m loftr.train", description=__doc__)
    parser.add_argument("images", help="folder of photos (searched recursively), or the ScanNet/MegaDepth data root")
    parser.add_argument("out_dir", help="checkpoints, log.jsonl; an existing last.pt is resumed")
    return add_config_flags(parser)


def run(args: argparse.Namespace) -> int:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    last = train(cfg)
    print(f"last checkpoint: {last}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(build_parser().parse_args()))
