"""The suite's three tiers, by folder: each test gets its tier's marker (``unit``,
``integration``, ``deploy``: ``pytest -m deploy`` runs one tier), and the run ends with the
time each tier took.

`make test` runs the tiers side by side on two pytest-xdist workers. The integration tests
that use the model servers are one work unit, run first and one after another on one worker,
which starts the broker and the model servers once: the run's critical path. The other worker
first runs the integration modules that need only the broker (their own broker, meanwhile),
then the unit and deployment tests, a module at a time.
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
#: Integration modules none of whose tests use the model servers: a work unit of their own, so
#: that they run beside the model servers' unit. Checked at collection.
BROKER_ONLY = frozenset(
    {
        "test_delivery.py",
        "test_hostile_memory.py",
        "test_kafka_security.py",
        "test_load.py",
        "test_outage.py",
    }
)


def tier_of(path: Path) -> str | None:
    relative = path.resolve().relative_to(HERE)
    return relative.parts[0] if relative.parts and relative.parts[0] in TIERS else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))
        fixtures = getattr(item, "fixturenames", ())
        if tier == "integration" and item.path.name in BROKER_ONLY and "model_servers" in fixtures:
            raise pytest.UsageError(
                f"{item.nodeid} uses the model servers: take {item.path.name} out of BROKER_ONLY in "
                "tests/conftest.py, or move the test to a module that has them"
            )
    # The integration tier first: the longest work unit starts at once.
    items.sort(key=lambda item: tier_of(item.path) != "integration")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Work units by module, and the integration tier as two: the tests with the model servers
    (which start once) and the broker-only modules. xdist's own loadgroup cannot do it: it
    reads the xdist_group marker from a node id attribute that pytest 9.2 no longer uses."""
    from xdist.scheduler import LoadScopeScheduling

    class TierScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist has no type information
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if module.startswith("tests/integration/"):
                broker_only = module.removeprefix("tests/integration/") in BROKER_ONLY
                return "tests/integration (broker only)" if broker_only else "tests/integration"
            return module

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
