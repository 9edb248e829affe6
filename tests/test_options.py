"""The model/matching options: one definition (loftr.options) that every matching sub-command uses."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import loftr
from loftr.cli import build_parser
from loftr.options import add_model_args, matcher_from_args, matcher_kwargs

MATCHING_COMMANDS = ("match", "demo", "pairs", "match-pairs", "sfm", "export", "eval pose", "eval homography",
                     "eval wxbs", "eval stereo", "eval synthetic", "pca", "attention", "serve")
SHARED_OPTIONS = ("--model", "--weights", "--preset", "--resize", "--max-size", "--max-pixels", "--threshold",
                  "--max-std", "--device", "--dtype", "--reference", "--rotations")


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[prefix + name] = sub
                out.update(_subparsers(sub, prefix + name + " "))
    return out


def test_every_matching_command_has_every_shared_option() -> None:
    commands = _subparsers(build_parser())
    missing = {name: [o for o in SHARED_OPTIONS if o not in commands[name]._option_string_actions]
               for name in MATCHING_COMMANDS if name in commands}
    assert {k: v for k, v in missing.items() if v} == {}
    assert {"match", "eval pose", "sfm", "serve", "pca"} <= set(commands)  # the registry found the sub-commands


def test_two_image_commands_default_to_1024_and_the_sfm_pipeline_to_640() -> None:
    from loftr.eval import posed
    from loftr.pipeline.cli import SFM_MAX_SIZE

    commands = _subparsers(build_parser())
    for name in ("match", "demo", "pca"):
        args = commands[name].parse_args(["x"] * 2 if name in ("match", "pca") else [])
        assert matcher_kwargs(args)["max_size"] == loftr.io.DEFAULT_MAX_SIZE == 1024, name
    assert posed.PROTOCOL.max_size == loftr.io.DEFAULT_MAX_SIZE  # `loftr eval posed` measures what users get
    for name, positional in (("pairs", ["d", "--exhaustive", "--out", "p.txt"]), ("match-pairs", ["d", "--exhaustive",
                             "--out", "m.h5"]), ("sfm", ["d", "--out", "o"])):
        assert matcher_kwargs(commands[name].parse_args(positional))["max_size"] == SFM_MAX_SIZE == 640, name
        assert matcher_kwargs(commands[name].parse_args([*positional, "--max-size", "1024"]))["max_size"] == 1024


def test_defaults_are_the_fast_path_and_reference_opts_out() -> None:
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    kw = matcher_kwargs(parser.parse_args([]))
    assert kw["fast"] is True and kw["max_size"] == loftr.io.DEFAULT_MAX_SIZE == 1024
    assert kw["max_pixels"] == loftr.io.MAX_PIXELS
    assert kw["rotations"] == 1
    assert matcher_kwargs(parser.parse_args(["--reference"]))["fast"] is False
    assert matcher_kwargs(parser.parse_args(["--max-pixels", "0", "--max-size", "0"]))["max_pixels"] is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--reference", "--fast"])
    assert matcher_from_args(parser.parse_args([])).model.fast
    assert not matcher_from_args(parser.parse_args(["--reference"])).model.fast


def test_entry_points_default_to_the_fast_path() -> None:
    import inspect

    from loftr.serve import ServeOptions

    assert inspect.signature(loftr.Matcher).parameters["fast"].default is True
    assert inspect.signature(loftr.match).parameters["fast"].default is True
    assert ServeOptions().fast is True
    for command in ("match", "eval wxbs", "match-pairs", "sfm", "serve", "pca"):
        sub = _subparsers(build_parser())[command]
        assert sub.get_default("reference") is False


def test_lower_floors_do_not_import_the_cli() -> None:
    src = Path(loftr.__file__).parent
    for module in ("eval/cli.py", "pipeline/cli.py", "inspect.py", "serve.py", "options.py"):
        text = (src / module).read_text()
        assert "from ..cli import" not in text and "from .cli import" not in text, module
