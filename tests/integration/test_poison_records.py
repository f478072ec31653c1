"""Poison records on the real broker: a record whose dead letter used to exceed a produce request
is dead-lettered once, bounded, and its partition moves on; outputs the broker refuses for their
size become one dead letter, or hold their partition visibly when even that does not fit."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import orjson
import pytest
from prometheus_client import CollectorRegistry

from streamproc.config import TopicSettings, WorkerSettings
from streamproc.dev.devstack import Broker
from streamproc.metrics import create as create_metrics
from streamproc.schemas import DeadLetter
from streamproc.stream import InboundRecord, OutboundRecord, Pipeline, too_large_letters
from tests.factories import listing_dict
from tests.integration.conftest import StartWorker, group_kafka, wait_until
from tests.integration.kafka_io import committed_offsets, consume, produce

pytestmark = pytest.mark.integration

#: The record that stalled its partition: a dead letter of it escaped every byte six times.
POISON = b"\x01" * (180 * 1024)


async def _passed(bootstrap: str, group_id: str, topic: str, offset: int) -> bool:
    committed = await committed_offsets(bootstrap, group_id, topic)
    return any(position > offset for position in committed.values())


async def _wait_committed_past(bootstrap: str, group_id: str, topic: str, offset: int) -> None:
    deadline = asyncio.get_running_loop().time() + 120
    while not await _passed(bootstrap, group_id, topic, offset):
        assert asyncio.get_running_loop().time() < deadline, f"{group_id} never committed past {offset}"
        await asyncio.sleep(0.5)


async def test_a_poison_record_is_dead_lettered_once_bounded_and_its_partition_moves_on(
    broker: Broker, topics: TopicSettings, start_worker: StartWorker
) -> None:
    group_id = f"poison-{uuid.uuid4().hex[:8]}"
    worker = start_worker(STREAMPROC_KAFKA__GROUP_ID=group_id)
    after = listing_dict(listing_id="L-after", title="Blue ceramic mug", attributes={})
    # one key: the same partition, the valid listing right behind the poison
    await produce(broker.bootstrap, topics.listings, [(b"L-1", POISON), (b"L-1", orjson.dumps(after))])
    letters = await consume(broker.bootstrap, [topics.dlq], 1, within=120)
    verdicts = await consume(broker.bootstrap, [topics.verdicts], 1, within=300)
    assert len(letters) == 1 and len(letters[0].value) < 200 * 1024
    letter = DeadLetter.model_validate_json(letters[0].value)
    assert (letter.reason, letter.payload_bytes, letter.payload_truncated) == (
        "invalid_json",
        len(POISON),
        True,
    )
    assert letter.payload_sha256 == hashlib.sha256(POISON).hexdigest()
    assert [orjson.loads(v.value)["content_id"] for v in verdicts] == ["L-after"]
    await _wait_committed_past(broker.bootstrap, group_id, topics.listings, letter.source_offset + 1)
    assert worker.total("streamproc_dead_letters_total", reason="invalid_json") == 1


def _pipeline(broker: Broker, topics: TopicSettings, group_id: str, *, replace: bool) -> Pipeline:
    async def oversized(record: InboundRecord) -> list[OutboundRecord]:
        # 2 MB: over the producer's 1 MiB request limit, as an unbounded output would be
        return [OutboundRecord(topics.verdicts, record.key, b"v" * 2_000_000)]

    registry = CollectorRegistry()
    metrics = create_metrics(registry)
    return Pipeline(
        group_kafka(broker, group_id),
        WorkerSettings(commit_interval_seconds=0.2),
        oversized,
        metrics,
        topics=[topics.listings],
        too_large=too_large_letters(dlq_topic=topics.dlq, worker="test", metrics=metrics)
        if replace
        else None,
    )


async def test_outputs_refused_for_size_become_one_dead_letter_and_the_offset_moves_on(
    broker: Broker, topics: TopicSettings
) -> None:
    group_id = f"too-large-{uuid.uuid4().hex[:8]}"
    pipeline = _pipeline(broker, topics, group_id, replace=True)
    await produce(broker.bootstrap, topics.listings, [(b"L-big", b"{}")])
    running = asyncio.create_task(pipeline.run())
    try:
        letters = await consume(broker.bootstrap, [topics.dlq], 1, within=60)
        await _wait_committed_past(broker.bootstrap, group_id, topics.listings, 0)
    finally:
        pipeline.stop()
        await running
    assert len(letters) == 1
    letter = DeadLetter.model_validate_json(letters[0].value)
    assert letter.reason == "output_too_large" and letter.payload == "" and letter.payload_bytes == 2
    assert f"{topics.verdicts} 2000000 bytes" in letter.error_message


async def test_without_a_replacement_the_partition_is_held_and_readiness_says_so(
    broker: Broker, topics: TopicSettings
) -> None:
    group_id = f"held-{uuid.uuid4().hex[:8]}"
    pipeline = _pipeline(broker, topics, group_id, replace=False)
    await produce(broker.bootstrap, topics.listings, [(b"L-big", b"{}")])
    running = asyncio.create_task(pipeline.run())
    try:
        held = lambda: any("held" in r for r in pipeline.readiness())  # noqa: E731
        await wait_until(held, "the held partition in readiness", within=60)
        [reason] = pipeline.readiness()
        committed = await committed_offsets(broker.bootstrap, group_id, topics.listings)
    finally:
        pipeline.stop()
        await running
    assert "held at offset 0: an output the broker refuses for its size" in reason
    assert all(position == 0 for position in committed.values())  # nothing committed past it
