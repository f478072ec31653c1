#!/usr/bin/env python3
"""Rewrite the generated tables in README.md and docs/*.md from the code (`make docs`).

A generated block is

    <!-- generated: NAME (make docs) -->
    | the table |
    <!-- end generated -->

where NAME is a key of GENERATORS. Each function is imported only when its block is
rewritten, so a missing one skips its blocks (and is named) instead of stopping the rest.
tests/unit/test_docs.py uses the same functions to check that every block is current.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: NAME -> (module, function, positional arguments); each function returns a markdown table.
GENERATORS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "settings": ("streamproc.config", "settings_reference", ()),
    "rule-fields": ("streamproc.policy", "rule_fields_reference", ()),
    "metrics-worker": ("streamproc.metrics", "metrics_reference", ("worker",)),
    "metrics-quality": ("streamproc.metrics", "metrics_reference", ("quality",)),
}

BLOCK = re.compile(
    r"(?P<start><!-- generated: (?P<name>[a-z0-9-]+) \(make docs\) -->\n)(?P<body>.*?)(?P<end><!-- end generated -->)",
    re.DOTALL,
)


class MissingGeneratorError(LookupError):
    """A block names no known generator, or its function cannot be imported."""


def pages() -> list[Path]:
    """Every page that may hold generated blocks."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(text: str) -> Iterator[tuple[str, str]]:
    """(name, current table) of each generated block in ``text``."""
    for match in BLOCK.finditer(text):
        yield match["name"], match["body"].strip("\n")


def generate(name: str) -> str:
    """The table block ``name`` should hold; MissingGeneratorError when it cannot be made."""
    if name not in GENERATORS:
        raise MissingGeneratorError(f"unknown generated block {name!r} (known: {', '.join(GENERATORS)})")
    module_name, function_name, args = GENERATORS[name]
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise MissingGeneratorError(f"{name}: cannot import {module_name}.{function_name} ({exc})") from exc
    return str(function(*args)).strip("\n")


def rewrite(text: str, skipped: set[str]) -> str:
    """``text`` with every block it can generate replaced; the others are added to ``skipped``."""

    def replace(match: re.Match[str]) -> str:
        try:
            table = generate(match["name"])
        except MissingGeneratorError as exc:
            skipped.add(str(exc))
            return match[0]
        return f"{match['start']}{table}\n{match['end']}"

    return BLOCK.sub(replace, text)


def main() -> int:
    skipped: set[str] = set()
    for page in pages():
        text = page.read_text()
        new = rewrite(text, skipped)
        if new != text:
            page.write_text(new)
            print(f"updated {page.relative_to(ROOT)}")
    for reason in sorted(skipped):
        print(f"skipped {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
