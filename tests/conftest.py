"""The suite's three tiers, by folder: each test gets its tier's marker (``unit``,
``integration``, ``deploy``: ``pytest -m deploy`` runs one tier), and the run ends with the
time each tier took.

`make test` runs the tiers side by side on two pytest-xdist workers: the integration tests
are one work unit, run first and one after another on one worker, which starts the broker and
the model servers once; the other worker runs the unit and deployment tests meanwhile, a
module at a time.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "deploy")
_seconds: defaultdict[str, float] = defaultdict(float)
#: Figures tests record (``record_property``), e.g. the image's size: shown at the end.
_figures: list[tuple[str, object]] = []
_yielded = False


def tier_of(path: Path) -> str | None:
    relative = path.resolve().relative_to(HERE)
    return relative.parts[0] if relative.parts and relative.parts[0] in TIERS else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))
    # The integration tier first: the longest work unit starts at once; within it, the tests
    # that need only the broker, while the model servers start (tests/integration/conftest.py).
    items.sort(
        key=lambda item: (
            tier_of(item.path) != "integration",
            "model_servers" in getattr(item, "fixturenames", ()),
        )
    )


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Work units by module, and the whole integration tier as one unit (its session servers
    start once). xdist's own loadgroup cannot do it: it reads the xdist_group marker from a
    node id attribute that pytest 9.2 no longer uses."""
    from xdist.scheduler import LoadScopeScheduling

    class TierScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist has no type information
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith("tests/integration/"):
                return "tests/integration"
            return nodeid.split("::", 1)[0]

    return TierScheduling(config, log)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under xdist, a worker running unit or deployment tests yields the CPU to the other's
    integration tests (the run's critical path) and their worker processes and servers."""
    global _yielded  # noqa: PLW0603  (once per worker process: niceness only goes up)
    if not _yielded and os.environ.get("PYTEST_XDIST_WORKER") and tier_of(item.path) != "integration":
        os.nice(10)
        _yielded = True


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    tier = tier_of(HERE.parent / report.location[0])
    _seconds[tier or "other"] += report.duration  # setup, call and teardown
    if report.when == "call":
        _figures.extend(report.user_properties)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _seconds:
        spent = ", ".join(f"{tier} {seconds:.0f} s" for tier, seconds in sorted(_seconds.items()))
        terminalreporter.write_line(f"time per tier (sum of the tests' own times): {spent}")
    for name, value in _figures:
        terminalreporter.write_line(f"{name}: {value:,}" if isinstance(value, int) else f"{name}: {value}")
