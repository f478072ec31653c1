"""Publishing and reading records with aiokafka, as an upstream or enforcement service would."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamproc.config import TopicSettings
from streamproc.schemas import Verdict


@dataclass(frozen=True)
class Received:
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


async def produce(bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def consume(
    bootstrap: str,
    topics: Sequence[str],
    count: int,
    within: float = 180.0,
    *,
    until: Callable[[list[Received]], bool] | None = None,
) -> list[Received]:
    """Read from the start until ``count`` records arrived (and ``until`` holds, if given),
    then 1 s more to catch extras."""
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    received: list[Received] = []

    def enough(at_least: int) -> bool:
        return len(received) >= at_least and (until is None or until(received))

    async def read(at_least: int) -> None:
        while not enough(at_least):
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                received.extend(Received(tp.topic, m.key, m.value or b"", dict(m.headers)) for m in messages)

    try:
        # A timeout returns what arrived: the caller's assertions say what was missing.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await read(count)
            async with asyncio.timeout(1.0):  # anything beyond the expected count is a bug
                await read(len(received) + 1)
    finally:
        await consumer.stop()
    return received


def verdicts_by_id(received: list[Received], verdict_topic: str) -> dict[str, list[Verdict]]:
    """The verdicts read back, every copy, by content id."""
    by_id: dict[str, list[Verdict]] = defaultdict(list)
    for record in received:
        if record.topic == verdict_topic:
            verdict = Verdict.model_validate_json(record.value)
            by_id[verdict.content_id].append(verdict)
    return by_id


async def verdicts_for(
    bootstrap: str, verdict_topic: str, ids: Iterable[str], within: float
) -> list[Received]:
    """Read the verdict topic until each of ``ids`` has a verdict: duplicates count towards
    the records read, so a record count alone would stop too early."""
    expected = set(ids)
    return await consume(
        bootstrap,
        [verdict_topic],
        len(expected),
        within=within,
        until=lambda records: set(verdicts_by_id(records, verdict_topic)) == expected,
    )


async def committed_offsets(bootstrap: str, group_id: str, topic: str) -> dict[TopicPartition, int]:
    """The group's committed positions, read as any consumer of the group would."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:  # metadata not fetched yet
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        positions = {tp: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()
    return {tp: position for tp, position in positions.items() if position is not None}


async def publish_content(
    bootstrap: str,
    topics: TopicSettings,
    listings: Sequence[Mapping[str, Any]] = (),
    videos: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Listing and video events to their topics, keyed by their ids, as upstream publishes them."""
    await produce(
        bootstrap, topics.listings, [(str(x["listing_id"]).encode(), orjson.dumps(x)) for x in listings]
    )
    await produce(bootstrap, topics.videos, [(str(x["video_id"]).encode(), orjson.dumps(x)) for x in videos])
