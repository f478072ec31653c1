from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from datetime import timedelta
from itertools import count
from pathlib import Path

import pytest
from hypothesis import settings
from prometheus_client import CollectorRegistry

from streamproc.config import TopicSettings
from streamproc.metrics import PrometheusQualityMetrics, PrometheusWorkerMetrics, create, create_quality
from streamproc.quality.store import QualityStore
from streamproc.stream.records import InboundRecord

_offsets = count()

# Property tests: Hypothesis's 100 examples each in `make test`; `make reliability` sets
# HYPOTHESIS_PROFILE=thorough for 2,000 (minutes, not seconds).
settings.register_profile("thorough", max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def quality_record(topic: str, value: bytes | None) -> InboundRecord:
    """A record as the quality service receives it: key L-1, each at the next offset."""
    return InboundRecord(topic, 0, next(_offsets), b"L-1", value)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> PrometheusWorkerMetrics:
    return create(registry, consumed_topics=("content.listings.v1", "content.videos.v1"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[QualityStore]:
    with QualityStore(tmp_path / "q.sqlite3", retention=timedelta(days=30), max_items=100) as opened:
        yield opened


@pytest.fixture
def quality_metrics(registry: CollectorRegistry) -> PrometheusQualityMetrics:
    topics = TopicSettings()
    return create_quality(registry, consumed_topics=(topics.verdicts, topics.labels))


@pytest.fixture
def root_logging() -> Iterator[io.StringIO]:
    """The root logger writes to the returned buffer; its set-up is restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
