from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loftr import Matcher
from loftr.pipeline import PipelineError
from loftr.pipeline.pairs import (auto_pairs, exhaustive_pairs, global_descriptors, list_images, read_pairs,
                                  retrieval_pairs, sequential_pairs, write_pairs)


def test_read_write_round_trip_ignores_comments_blanks_and_duplicates(tmp_path: Path) -> None:
    f = tmp_path / "pairs.txt"
    f.write_text("# header\n\na.jpg b.jpg\n  c.jpg   a.jpg  \nb.jpg a.jpg\n# trailing\n")
    assert read_pairs(f, ["a.jpg", "b.jpg", "c.jpg"]) == [("a.jpg", "b.jpg"), ("c.jpg", "a.jpg")]
    out = write_pairs(tmp_path / "x" / "p.txt", [("a.jpg", "b.jpg"), ("c.jpg", "a.jpg")])
    assert out.read_text() == "a.jpg b.jpg\nc.jpg a.jpg\n"
    assert read_pairs(out) == [("a.jpg", "b.jpg"), ("c.jpg", "a.jpg")]


@pytest.mark.parametrize("text,message", [
    ("a.jpg b.jpg\na.jpg\n", r"pairs.txt:2: expected 'name0 name1', got 'a.jpg'"),
    ("a.jpg b.jpg c.jpg\n", r"pairs.txt:1: expected"),
    ("# c\na.jpg a.jpg\n", r"pairs.txt:2: an image paired with itself"),
    ("a.jpg b.jpg\n\nb.jpg d.jpg\n", r"pairs.txt:3: image 'd.jpg' is not in the image folder"),
])
def test_malformed_pairs_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "pairs.txt"
    f.write_text(text)
    with pytest.raises(PipelineError, match=message):
        read_pairs(f, ["a.jpg", "b.jpg", "c.jpg"])


def test_missing_pairs_file_and_image_folder(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="does not exist"):
        read_pairs(tmp_path / "nope.txt")
    with pytest.raises(PipelineError, match="does not exist or is not a folder"):
        list_images(tmp_path / "nope")


def test_list_images_is_recursive_sorted_and_skips_other_files(tmp_path: Path) -> None:
    for rel in ("b.JPG", "a.png", "sub/c.jpeg", "notes.txt", "with space.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert list_images(tmp_path) == ["a.png", "b.JPG", "sub/c.jpeg"]


def test_exhaustive_and_sequential() -> None:
    names = ["d", "a", "c", "b"]
    assert exhaustive_pairs(names) == [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]
    assert sequential_pairs(names, 1) == [("a", "b"), ("b", "c"), ("c", "d")]
    assert sequential_pairs(names, 2) == [("a", "b"), ("a", "c"), ("b", "c"), ("b", "d"), ("c", "d")]
    assert sequential_pairs(names, 10) == exhaustive_pairs(names)
    with pytest.raises(PipelineError, match="at least 1"):
        sequential_pairs(names, 0)


def test_retrieval_takes_the_k_most_similar_by_cosine() -> None:
    names = ["a", "b", "c", "d"]
    desc = np.array([[1.0, 0.0], [10.0, 1.0], [0.0, 1.0], [0.1, 3.0]])  # a~b, c~d (scale does not matter)
    assert retrieval_pairs(names, desc, 1) == [("a", "b"), ("c", "d")]
    assert len(retrieval_pairs(names, desc, 3)) == 6
    with pytest.raises(PipelineError, match="4 names but 3 descriptors"):
        retrieval_pairs(names, desc[:3], 1)


def test_auto_pairs_are_exhaustive_for_a_small_set_and_sequential_plus_retrieval_beyond() -> None:
    def never() -> np.ndarray:
        raise AssertionError("a small set needs no descriptors")

    small = [f"{i:02d}" for i in range(6)]
    assert auto_pairs(small[::-1], never, max_exhaustive=6) == exhaustive_pairs(small)
    # 8 frames of a sequence that jumps: 0-3 and 4-7 are two passes, frame 7 looks like frame 0 again
    names = [f"{i:02d}" for i in range(8)]
    desc = np.array([[1, 0, 0], [1, .1, 0], [.9, .2, 0], [0, 1, 0], [0, 1, .1], [0, .9, .2], [.1, .8, .3],
                     [1, 0, .05]])
    got = auto_pairs(names, lambda: desc, max_exhaustive=6, sequential=1, retrieval=1)
    assert got[:7] == sequential_pairs(names, 1)  # the sequence first, then what retrieval adds
    assert ("00", "07") in got and len(got) == len(set(map(frozenset, got)))
    assert auto_pairs(names, None, max_exhaustive=6, sequential=2) == sequential_pairs(names, 2)
    assert len(auto_pairs(names, lambda: desc, max_exhaustive=8)) == 28


def test_global_descriptors_retrieve_frames_of_the_same_sequence(images: Path, tiny_weights: Path) -> None:
    names = list_images(images)
    desc = global_descriptors(Matcher(weights=tiny_weights, max_size=160), [images / n for n in names])
    assert desc.shape == (7, 128) and np.allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-5)
    for a, b in retrieval_pairs(names, desc, 1):
        assert a.split("_")[0] == b.split("_")[0], (a, b)


def test_loftr_sfm_without_a_pair_option_pairs_a_small_folder_exhaustively(tmp_path: Path) -> None:
    from loftr.cli import build_parser
    from loftr.pipeline.cli import _pairs

    for i in range(5):
        (tmp_path / f"{i}.png").write_bytes(b"")  # only the names are read
    args = build_parser().parse_args(["sfm", str(tmp_path), "--out", str(tmp_path / "out")])
    assert _pairs(args, matcher=object()) == exhaustive_pairs([f"{i}.png" for i in range(5)])
    args = build_parser().parse_args(["sfm", str(tmp_path), "--out", str(tmp_path / "out"), "--sequential", "1"])
    assert len(_pairs(args)) == 4
