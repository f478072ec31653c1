from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from streamproc.metrics import Metrics, create


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return create(registry, consumed_topics=("content.listings.v1", "content.videos.v1"))
