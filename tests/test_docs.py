"""The documentation holds together: every relative link resolves, the README keeps CI's set-up commands and stays
short, and the model card keeps the markers the release gate writes its table between."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _links(path: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", path.read_text(encoding="utf-8")))


def test_slug_follows_github() -> None:
    assert _slug("Stage 5: a match filter, no training (2026-11-30, `a890a24`)") == (
        "stage-5-a-match-filter-no-training-2026-11-30-a890a24"
    )


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in _links(doc):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target} (no heading with that anchor)")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links {broken}"


def test_readme_keeps_ci_setup_commands_and_is_short() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # CI quietens pip (`pip install -q`); otherwise its lines are the README's, byte for byte
    commands = [line.replace("install -q ", "install ") for line in ci.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2
    for command in commands:
        assert command in readme.splitlines(), f"README lacks CI's set-up command: {command}"
    assert len(readme.splitlines()) < 200


def test_model_card_has_release_table_markers() -> None:
    lines = (ROOT / "docs" / "model_card.md").read_text(encoding="utf-8").splitlines()
    begin, end = "<!-- release-table:begin -->", "<!-- release-table:end -->"
    assert lines.count(begin) == 1 and lines.count(end) == 1
    assert lines.index(begin) < lines.index(end)
