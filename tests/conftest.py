"""The suite's three tiers, by folder: each test gets its tier's marker (``unit``,
``integration``, ``deploy``: ``pytest -m deploy`` runs one tier), and the run ends with the
time each tier took.

`make test` runs the tiers side by side (pytest-xdist, ``--dist loadgroup``): the
integration tests form one group, so they run one after another on one worker, which starts
the broker and the model servers once; the unit and deployment tests run on the other
worker meanwhile.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "deploy")
_seconds: defaultdict[str, float] = defaultdict(float)


def tier_of(path: Path) -> str | None:
    relative = path.resolve().relative_to(HERE)
    return relative.parts[0] if relative.parts and relative.parts[0] in TIERS else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))
        if tier == "integration":
            item.add_marker(pytest.mark.xdist_group("integration"))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    tier = tier_of(HERE.parent / report.location[0])
    _seconds[tier or "other"] += report.duration  # setup, call and teardown


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _seconds:
        spent = ", ".join(f"{tier} {seconds:.0f} s" for tier, seconds in sorted(_seconds.items()))
        terminalreporter.write_line(f"time per tier (sum of the tests' own times): {spent}")
