"""Delivery through the pipeline: the in-flight window keeps key order and commits safely, and
slow items do not cost the group its members. The broker only, no model server
(test_delivery_faults.py has SIGKILL and a model server outage)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable

import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from streamproc.config import KafkaSettings, Settings, TopicSettings, WorkerSettings
from streamproc.dev.devstack import Broker
from streamproc.metrics import create as create_metrics
from streamproc.schemas import Verdict
from streamproc.stream import InboundRecord, OutboundRecord, Pipeline
from tests.integration.kafka_io import Received, committed_offsets, consume, produce

pytestmark = pytest.mark.integration


async def until_committed(bootstrap: str, group_id: str, topic: str, count: int) -> None:
    """Wait until the group has committed ``count`` offsets of a fresh topic in all."""
    deadline = asyncio.get_running_loop().time() + 120
    while sum((await committed_offsets(bootstrap, group_id, topic)).values()) < count:
        assert asyncio.get_running_loop().time() < deadline, f"{group_id} never committed {count} offsets"
        await asyncio.sleep(0.5)


async def test_window_keeps_key_order_and_never_commits_past_an_unfinished_item(
    broker: Broker, topics: TopicSettings
) -> None:
    """Hundreds of items in flight finish out of order; one is held back on purpose."""
    group_id = f"window-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=broker.bootstrap, group_id=group_id),
        topics=topics,
        worker=WorkerSettings(max_inflight_items=400, commit_interval_seconds=0.2),
    )
    release = asyncio.Event()
    held: list[InboundRecord] = []
    peak = 0

    async def handler(record: InboundRecord) -> list[OutboundRecord]:
        nonlocal peak
        peak = max(peak, pipeline.in_flight)
        if record.key == b"L-held":
            held.append(record)
            await release.wait()
        else:
            await asyncio.sleep(random.uniform(0, 0.3))  # finish out of order
        return [OutboundRecord(topics.verdicts, record.key, record.value or b"")]

    pipeline = Pipeline(
        settings.kafka,
        settings.worker,
        handler,
        create_metrics(CollectorRegistry()),
        topics=[topics.listings],
    )
    # 40 listings x 10 revisions each, plus one listing whose item never finishes until released.
    events = [(b"L-held", orjson.dumps({"revision": 0}))] + [
        (f"L-{n}".encode(), orjson.dumps({"revision": revision})) for revision in range(10) for n in range(40)
    ]
    await produce(broker.bootstrap, topics.listings, events)
    running = asyncio.create_task(pipeline.run())
    try:
        outputs = await consume(broker.bootstrap, [topics.verdicts], len(events) - 1, within=60)
        assert len(outputs) == len(events) - 1
        await asyncio.sleep(1.0)  # several commit intervals
        committed = await committed_offsets(broker.bootstrap, group_id, topics.listings)
        held_tp = TopicPartition(held[0].topic, held[0].partition)
        assert committed.get(held_tp, 0) <= held[0].offset  # never past the unfinished item
        release.set()
        await asyncio.sleep(1.0)
        ends = await committed_offsets(broker.bootstrap, group_id, topics.listings)
    finally:
        pipeline.stop()
        await running
    assert peak >= 200  # the window was used across partitions
    assert sum(ends.values()) == len(events)  # every offset committed once all finished
    revisions: dict[bytes | None, list[int]] = defaultdict(list)
    for output in outputs:
        revisions[output.key].append(orjson.loads(output.value)["revision"])
    assert all(seen == list(range(10)) for seen in revisions.values()), "a key's revisions came out of order"


async def test_items_slower_than_the_session_timeout_cause_no_rebalance(
    broker: Broker, topics: TopicSettings
) -> None:
    settings = Settings(
        kafka=KafkaSettings(
            bootstrap_servers=broker.bootstrap,
            group_id=f"slow-{uuid.uuid4().hex[:8]}",
            session_timeout_seconds=6,
            rebalance_timeout_seconds=6,
        ),
        topics=topics,
    )
    registry = CollectorRegistry()

    async def slow(record: InboundRecord) -> list[OutboundRecord]:
        await asyncio.sleep(15)  # a model call far slower than the session timeout
        return [OutboundRecord(topics.verdicts, record.key, record.value or b"")]

    pipeline = Pipeline(
        settings.kafka, settings.worker, slow, create_metrics(registry), topics=[topics.listings]
    )
    await produce(broker.bootstrap, topics.listings, [(f"L-s{i}".encode(), b"{}") for i in range(20)])
    running = asyncio.create_task(pipeline.run())
    try:
        outputs = await consume(broker.bootstrap, [topics.verdicts], 20, within=60)
        revoked = registry.get_sample_value("streamproc_rebalances_total", {"event": "revoked"})
        assigned = registry.get_sample_value("streamproc_rebalances_total", {"event": "assigned"})
    finally:
        pipeline.stop()
        await running
    assert len(outputs) == 20
    assert (assigned, revoked) == (1, 0)


def verdicts_by_id(received: list[Received], verdict_topic: str) -> dict[str, list[Verdict]]:
    by_id: dict[str, list[Verdict]] = defaultdict(list)
    for record in received:
        if record.topic == verdict_topic:
            verdict = Verdict.model_validate_json(record.value)
            by_id[verdict.content_id].append(verdict)
    return by_id


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
