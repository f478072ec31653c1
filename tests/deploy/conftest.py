"""The deployment checks carry the ``deploy`` marker: `make deploy-check` (``pytest -m deploy``)
runs just them, without a broker or model server."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.deploy)
