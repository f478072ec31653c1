"""The load generator against a real broker, with an in-process worker whose model answers instantly."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import CollectorRegistry

from load.instant import ZeroCostModel
from load.loadgen import open_loop
from load.workload import make_events
from streamproc.config import Settings, TopicSettings
from streamproc.dev.devstack import Broker
from streamproc.metrics import create as create_metrics
from streamproc.stream import Pipeline
from tests.factories import shipped_policies, worker_processor
from tests.integration.conftest import group_kafka, wait_until

pytestmark = pytest.mark.integration


async def test_open_loop_run_reads_back_every_verdict_and_times_it(
    broker: Broker, topics: TopicSettings
) -> None:
    settings = Settings(
        kafka=group_kafka(broker, f"load-{uuid.uuid4().hex[:8]}"),
        topics=topics,
    )
    registry = CollectorRegistry()
    metrics = create_metrics(registry)
    processor = worker_processor(settings, shipped_policies(), ZeroCostModel(), metrics)
    pipeline = Pipeline(
        settings.kafka, settings.worker, processor.process, metrics, topics=[topics.listings, topics.videos]
    )
    running = asyncio.create_task(pipeline.run())
    try:
        # group joining is not to be timed as latency
        await wait_until(
            lambda: bool(registry.get_sample_value("streamproc_rebalances_total", {"event": "assigned"})),
            "the worker to be assigned its partitions",
            within=60,
        )
        events = make_events(200, seed=9, run=uuid.uuid4().hex[:6])
        report = await open_loop(broker.bootstrap, topics, events, 100.0, settle_seconds=60)
    finally:
        pipeline.stop()
        await running
    assert (report.sent, report.received, len(report.samples)) == (200, 200, 200)
    assert 0 < report.latency.p50 <= report.latency.p99 <= report.latency.max < 60
    finished = max(offset + latency for offset, latency in report.samples)
    assert report.throughput == pytest.approx(200 / finished)
    # the last answer comes after the last scheduled send
    assert report.throughput <= report.received / report.duration_seconds
