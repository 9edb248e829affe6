"""The release gate's rule, table and model-card writing (benchmarks/release.py), on made-up rows, and its held-out
pairs on the shared data (skipped without it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def release():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("release", ROOT / "benchmarks" / "release.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["release"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _row(release, key, cand, shipped, *, std=1.0, higher=True, floor=0.0):
    Stat = release.Stat
    stats = {"candidate": {"fig": Stat(cand, std)}, "shipped": {"fig": Stat(shipped, std)}, "SIFT": {"fig": Stat(0.0)}}
    return release.Row(key, key, ("fig",), stats, "test", higher=higher, floor=floor)


def test_judge_uses_the_noise_of_both_models(release):
    # noise = hypot(1, 1) = 1.41: a 1-point move is level, a 2-point one is not
    assert release.judge(_row(release, "a", 51.0, 50.0), "candidate", "shipped").status == "level"
    assert release.judge(_row(release, "a", 52.0, 50.0), "candidate", "shipped").status == "ahead"
    assert release.judge(_row(release, "a", 48.0, 50.0), "candidate", "shipped").status == "FELL"
    # lower is better (time): slower beyond the noise falls
    assert release.judge(_row(release, "t", 3.0, 1.0, higher=False), "candidate", "shipped").status == "FELL"
    # a deterministic row falls only beyond its floor
    assert release.judge(_row(release, "r", 19.0, 20.0, std=0.0, floor=1.0), "candidate", "shipped").status == "level"
    assert release.judge(_row(release, "r", 17.0, 20.0, std=0.0, floor=1.0), "candidate", "shipped").status == "FELL"


def test_verdict_needs_the_target_ahead_and_no_row_falling(release):
    ahead, level, fell = _row(release, "t", 55.0, 50.0), _row(release, "l", 50.5, 50.0), _row(release, "f", 40.0, 50.0)
    ok, why = release.verdict([ahead, level], "candidate", "shipped", "t")
    assert ok is True and why.startswith("SHIP")
    ok, why = release.verdict([ahead, fell], "candidate", "shipped", "t")
    assert ok is False and "f" in why.split("fell beyond noise:")[1]
    ok, _ = release.verdict([ahead, level], "candidate", "shipped", "l")  # target only level
    assert ok is False
    ok, why = release.verdict([ahead, fell], "candidate", "shipped", None)
    assert ok is None and "f" in why


def _row3(release, key, cand, shipped, before, std=1.0):
    row = _row(release, key, cand, shipped, std=std)
    row.stats["before"] = {"fig": release.Stat(before, std)}
    return row


def test_verdict_keeps_level_steps_from_adding_up_to_a_fall(release):
    # level against the shipped file (-1.5 < 1.41 is not) ... a fall of 3 against the one before it
    drift = _row3(release, "d", 48.8, 50.0, 52.0)
    target = _row3(release, "t", 55.0, 50.0, 50.0)
    ok, why = release.verdict([target, drift], "candidate", "shipped", "t")
    assert ok is True
    ok, why = release.verdict([target, drift], "candidate", "shipped", "t", "before")
    assert ok is False and "d (against before)" in why
    # rows the earlier file was not measured on are judged against the shipped file only
    ok, _ = release.verdict([target, _row(release, "n", 50.0, 50.0)], "candidate", "shipped", "t", "before")
    assert ok is True
    table = release.markdown([target, drift], ["candidate", "shipped", "before"], "candidate", "shipped", "before")
    assert "| -1.20 (1.41) | level | -3.20 (1.41) | FELL |" in table and "status vs before" in table


def test_previous_bundled_file_comes_from_git_history(release, tmp_path):
    import subprocess

    log = subprocess.run(["git", "-C", str(ROOT), "log", "-n", "2", "--format=%H", "--",
                          "src/loftr/weights/tiny_ds.safetensors"], capture_output=True, text=True)
    if log.returncode != 0 or len(log.stdout.split()) < 2:
        pytest.skip("no git history of the bundled weights here")
    from safetensors import safe_open

    from loftr.weights import sha256_of

    path = release.previous_bundled(tmp_path)
    assert path == release.previous_bundled(tmp_path)  # written once
    assert sha256_of(path) != sha256_of(ROOT / "src" / "loftr" / "weights" / "tiny_ds.safetensors")
    with safe_open(str(path), "pt") as f:
        assert len(list(f.keys())) > 10


def test_table_and_card(release, tmp_path):
    rows = [_row(release, "t", 55.0, 50.0)]
    table = release.markdown(rows, ["candidate", "shipped", "SIFT"], "candidate", "shipped")
    assert "| **t**: t | fig | 55.0 (±1.0) | 50.0 (±1.0) | 0.0 | +5.00 (1.41) | ahead |" in table
    card = tmp_path / "card.md"
    card.write_text(f"# card\n{release.BEGIN}\nold table\n{release.END}\nafter\n")
    release.write_card(card, table, "header")
    text = card.read_text()
    assert "old table" not in text and "header" in text and "+5.00" in text and text.endswith("after\n")
    card.write_text("no markers")
    with pytest.raises(SystemExit, match="markers"):
        release.write_card(card, table, "header")


def test_match_orders_are_seeded_permutations(release):
    from loftr.eval.baselines import PairMatches

    m = PairMatches.create(np.arange(20.0).reshape(10, 2), np.arange(20.0).reshape(10, 2) + 1, np.linspace(1, 0, 10))
    assert release.permuted(m, 0) is m
    a, b = release.permuted(m, 1), release.permuted(m, 1)
    assert np.array_equal(a.kpts0, b.kpts0) and not np.array_equal(a.kpts0, m.kpts0)
    assert np.array_equal(np.sort(a.kpts0[:, 0]), np.sort(m.kpts0[:, 0]))
    assert np.array_equal(a.kpts1 - a.kpts0, np.ones((10, 2)))  # pairs stay together


def test_code_hash_ignores_training_code(release):
    h = release.code_hash()
    assert isinstance(h, str) and len(h) == 16 and h == release.code_hash() != release.code_hash(("eval",))
    assert release.code_hash(exclude=release.NOT_MATCHING) != h


def test_code_hash_sees_code_not_its_docs(release, tmp_path, monkeypatch):
    pkg = tmp_path / "src" / "loftr"
    pkg.mkdir(parents=True)
    monkeypatch.setattr(release, "ROOT", tmp_path)

    def hashed(source: str) -> str:
        (pkg / "m.py").write_text(source)
        return release.code_hash()

    base = hashed('def f(x):\n    """Doc."""\n    return g(x, help="a")  # c\n')
    assert hashed('def f(x):\n    """Other doc."""\n    # new comment\n    return g(x, help="b")\n') == base
    assert hashed('def f(x):\n    """Doc."""\n    return g(x + 1, help="a")\n') != base
    assert hashed('def f(x):\n    """Doc."""\n    return g(x, mode="a")\n') != base


def test_heldout_pairs_are_wide_and_posed(release):
    scene = release.DATA / "posed_train" / release.HELD_OUT
    if not (scene / "pairs.txt").is_file():
        pytest.skip("no shared posed_train data")
    pairs = release.heldout_pairs(scene, n=10)
    assert len(pairs) == 10 and len({p.name for p in pairs}) == 10
    overlap = {tuple(r.split()[:2]): float(r.split()[3]) for r in (scene / "pairs.txt").read_text().splitlines()}
    for p in pairs:
        assert 0.1 <= overlap[(p.image0.name, p.image1.name)] <= 0.4
        assert p.image0.is_file() and np.allclose(p.T_0to1[3], [0, 0, 0, 1])
    assert [p.name for p in release.heldout_pairs(scene, n=10)] == [p.name for p in pairs]


def test_split_rows_balances_and_keeps_speed_out(release):
    rows = list(release.ROWS)
    groups = release.split_rows(rows, 2)
    assert sorted(sum(groups, [])) == sorted(r for r in rows if r != "speed") and len(groups) == 2
    loads = [sum(release.COST[r] for r in g) for g in groups]
    assert max(loads) - min(loads) <= max(release.COST.values())
    assert release.split_rows(["stereo"], 3) == [["stereo"]]


@pytest.fixture(scope="module")
def spread(release):
    spec = importlib.util.spec_from_file_location("heldout_spread", ROOT / "benchmarks" / "heldout_spread.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_bootstrap_sees_the_difference_not_the_pairs(spread):
    rng = np.random.default_rng(0)
    hard = rng.uniform(0, 40, (60, 4))  # pairs of very different difficulty: a large unpaired spread
    same = spread.paired_bootstrap(hard, hard.copy(), 5.0, 200)
    assert np.all(same == 0)
    better = hard.copy()
    better[:20] = 0.5  # a third of the pairs solved
    boot = spread.paired_bootstrap(hard, better, 5.0, 500)
    gain = spread.auc(better, 5.0) - spread.auc(hard, 5.0)
    assert gain > 10 and np.all(boot >= 0) and abs(boot.mean() - gain) < 0.2 * gain and boot.std() > 0


def test_fresh_heldout_pairs_leave_the_gates_out(spread, release):
    scene = release.DATA / "posed_train" / release.HELD_OUT
    if not (scene / "pairs.txt").is_file():
        pytest.skip("no shared posed_train data")
    gate = {p.name for p in release.heldout_pairs(scene)}
    fresh = spread.fresh_pairs(scene, 30, seed=1)
    names = [p.name for p in fresh]
    assert len(set(names)) == 30 and not gate & set(names)
    assert names == [p.name for p in spread.fresh_pairs(scene, 30, seed=1)] != [p.name for p in
                                                                                spread.fresh_pairs(scene, 30, seed=2)]


def test_cache_key_follows_the_rows_data(release, tmp_path, monkeypatch):
    ctx = release.Context((), (), tmp_path, tmp_path, "src", "match", print)
    sift = release.Baseline("sift")
    key = release._cache_key(ctx, "heldout", sift)
    assert key == release._cache_key(ctx, "heldout", sift) and key.parent == tmp_path
    monkeypatch.setitem(release.ROW_DATA, "heldout", "other pairs")
    assert release._cache_key(ctx, "heldout", sift) != key


def test_spread_models_take_a_filter(spread):
    plain, off = spread._model("default"), spread._model("default@0")
    assert plain.max_std is None and off.max_std == 0.0 and off.label == "default@0" and off.path == plain.path
    with pytest.raises(SystemExit, match="after @"):
        spread._model("default@off")


def test_candidate_scales_reach_matcher_cli_and_cache_key(release, tmp_path, monkeypatch):
    import hashlib

    ctx = release.Context((), (), tmp_path, tmp_path, "src", "match", print)
    monkeypatch.setattr(release.Model, "sha256", property(lambda self: "sha"))
    plain = release.Model("shipped", "default", tmp_path / "w.safetensors", None)
    scaled = release.replace(plain, scales=(0.5,))
    assert scaled.cli_args()[-2:] == ["--scales", "0.5"] and "--scales" not in plain.cli_args()
    assert release._cache_key(ctx, "wxbs", plain) != release._cache_key(ctx, "wxbs", scaled)
    old = hashlib.sha256(b"sha|None|fp32|match").hexdigest()[:20]  # a file without scales keeps its cached results
    assert release._cache_key(ctx, "wxbs", plain).name == f"wxbs-{old}.json"
    adaptive = release.replace(scaled, search_below=150)
    assert adaptive.cli_args()[-4:] == ["--scales", "0.5", "--search-below", "150"]
    assert release._cache_key(ctx, "wxbs", adaptive) != release._cache_key(ctx, "wxbs", scaled)
    was = hashlib.sha256(b"sha|None|fp32|match|scales (0.5,)").hexdigest()[:20]  # scales alone keep their cache
    assert release._cache_key(ctx, "wxbs", scaled).name == f"wxbs-{was}.json"


def test_results_of_the_bundled_files_are_published_and_read_back(release, tmp_path, monkeypatch):
    monkeypatch.setattr(release, "PUBLISHED", tmp_path / "published")
    monkeypatch.setattr(release.Model, "sha256", property(lambda self: self.spec))
    shipped = release.Model("shipped", "s", tmp_path / "s.safetensors", None)
    cand = release.Model("candidate", "c", tmp_path / "c.safetensors", None)
    measured: list[str] = []

    def compute(todo):
        measured.extend(todo)
        return {label: {"fig": release.Stat(1.0 if label == "candidate" else 2.0)} for label in todo}

    ctx = release.Context((cand, shipped), (), tmp_path, tmp_path / "cache", "src", "match", print)
    first = release.per_method(ctx, "wxbs", compute, lambda m: m, baselines=())
    assert sorted(measured) == ["candidate", "shipped"] and first["shipped"]["fig"].mean == 2.0
    published = sorted(p.name for p in (tmp_path / "published").iterdir())
    assert published == [release._cache_key(ctx, "wxbs", shipped).name]  # the candidate's result stays local
    measured.clear()  # a fresh checkout: no local cache, the published result of the shipped file is read
    fresh = release.replace(ctx, cache=tmp_path / "fresh")
    again = release.per_method(fresh, "wxbs", compute, lambda m: m, baselines=())
    assert measured == ["candidate"] and again["shipped"]["fig"].mean == 2.0


def test_only_the_previous_bundled_file_is_labelled_before_and_published(release, tmp_path, monkeypatch):
    monkeypatch.setattr(release, "previous_bundled", lambda store: tmp_path / "prev.safetensors")
    monkeypatch.setattr(release, "resolve", lambda spec, label, max_std: release.Model(label, spec, Path(spec), max_std))
    assert release.resolve_before("previous", tmp_path).label == "before"
    other = release.resolve_before(str(tmp_path / "mine.safetensors"), tmp_path)
    assert other.label == "earlier" and other.label not in release.PUBLISHED_LABELS


def test_pruning_keeps_the_results_the_bundled_files_read_and_removes_the_rest(release, tmp_path, monkeypatch):
    monkeypatch.setattr(release, "PUBLISHED", tmp_path / "published")
    monkeypatch.setattr(release.Model, "sha256", property(lambda self: self.spec))
    shipped = release.Model("shipped", "s", tmp_path / "s.safetensors", None)
    ctx = release.Context((shipped,), (), tmp_path, tmp_path / "cache", "src", "match", print)
    current = [release._cache_key(ctx, "wxbs", shipped), release._cache_key(ctx, "sfm_fox", release.Baseline("sift"))]
    old = release._cache_key(release.replace(ctx, match_tree="older code"), "wxbs", shipped)
    (tmp_path / "published").mkdir()
    for key in (*current, old):
        (tmp_path / "published" / key.name).write_text("{}")
    assert release.prune_published(ctx) == [tmp_path / "published" / old.name]
    assert sorted(p.name for p in (tmp_path / "published").iterdir()) == sorted(k.name for k in current)


def test_baselines_only_writes_the_baselines_table_without_a_verdict(release, tmp_path):
    if not (release.DATA / "posed").is_dir():
        pytest.skip("shared data not present")
    out = tmp_path / "gate"
    rc = release.main(["default", "--max-std", "0", "--baselines-only", "--rows", "stereo", "--no-cache",
                       "--out", str(out)])  # a candidate other than the file against: still no judged columns
    assert rc == 0
    text = (out / "results.md").read_text()
    assert "| SIFT |" in text and "no verdict" in text and "Δ judged" not in text
