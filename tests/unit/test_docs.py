"""The documentation: generated tables current, relative links alive, a short README linking every page."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
gen_docs = runpy.run_path(str(ROOT / "scripts" / "gen_docs.py"))

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")
FENCE = re.compile(r"^```.*?^```[^\n]*$", re.DOTALL | re.MULTILINE)
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)

BLOCKS = [
    (page, name, body) for page in gen_docs["pages"]() for name, body in gen_docs["blocks"](page.read_text())
]


def _links(page: Path) -> list[str]:
    """Relative link targets outside code fences and code spans."""
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text()))
    return [target for target in LINK.findall(text) if not SCHEME.match(target)]


def _anchors(page: Path) -> set[str]:
    """GitHub's heading slugs: lower-case, punctuation but '-' and '_' dropped, spaces to '-'."""
    headings = HEADING.findall(FENCE.sub("", page.read_text()))
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


LINKS = [(page, target) for page in [README, *DOCS, ROOT / "load" / "RESULTS.md"] for target in _links(page)]


@pytest.mark.parametrize(("page", "name", "body"), BLOCKS, ids=[f"{p.name}:{n}" for p, n, _ in BLOCKS])
def test_generated_block_is_current(page: Path, name: str, body: str) -> None:
    try:
        expected = gen_docs["generate"](name)
    except gen_docs["MissingGeneratorError"] as exc:
        pytest.fail(f"{page.name}: {exc}")
    assert body == expected, f"{page.name}: the {name!r} table is stale; run `make docs`"


@pytest.mark.parametrize("name", list(gen_docs["GENERATORS"]))
def test_every_generated_table_is_placed(name: str) -> None:
    assert name in {block_name for _, block_name, _ in BLOCKS}, f"no page holds the generated {name!r} table"


@pytest.mark.parametrize(("page", "target"), LINKS, ids=[f"{p.name}->{t}" for p, t in LINKS])
def test_relative_link_resolves(page: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    linked = (page.parent / path).resolve() if path else page
    assert linked.exists(), f"{page.name}: {target} leads nowhere"
    if anchor and linked.suffix == ".md":
        assert anchor in _anchors(linked), f"{page.name}: {linked.name} has no heading #{anchor}"


def test_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) <= 200


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_readme_links_every_docs_page(page: Path) -> None:
    assert page in {(ROOT / target.partition("#")[0]).resolve() for target in _links(README)}
