"""The in-flight window against a fake consumer: a full window waits for the commit that frees
it instead of pausing (pausing drops what aiokafka prefetched), and pauses only when it stays
full; a commit that makes room resumes consumption at once."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from streamproc.config import KafkaSettings, WorkerSettings
from streamproc.metrics import NOOP
from streamproc.stream import Pipeline
from streamproc.stream.records import InboundRecord, OutboundRecord

TP = TopicPartition("content.listings.v1", 0)


class FakeConsumer:
    """Serves ``count`` records of one partition; records pauses and commits, and sets ``done``
    once all are committed."""

    def __init__(self, count: int) -> None:
        self.done = asyncio.Event()
        self.count = count
        self.pending = [
            SimpleNamespace(topic=TP.topic, partition=0, offset=o, key=None, value=b"{}")
            for o in range(count)
        ]
        self.paused: set[TopicPartition] = set()
        self.pauses = 0
        self.committed: list[int] = []

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def pause(self, *tps: TopicPartition) -> None:
        self.pauses += not self.paused
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tps)

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        if self.paused or not self.pending:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        batch, self.pending = self.pending[:max_records], self.pending[max_records:]
        return {TP: batch}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.append(offsets[TP])
        if offsets[TP] == self.count:
            self.done.set()


async def _consume(handler: Any, count: int, window: int) -> FakeConsumer:
    pipeline = Pipeline(
        KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        WorkerSettings(max_inflight_items=window, fetch_max_records=window, commit_interval_seconds=30),
        handler,
        NOOP,
        topics=[TP.topic],
    )
    real_consumer, real_producer = pipeline._consumer, pipeline._producer
    consumer = FakeConsumer(count)
    pipeline._consumer = consumer
    tasks = [asyncio.create_task(pipeline._fetch()), asyncio.create_task(pipeline._commit_periodically())]
    try:
        async with asyncio.timeout(10):
            await consumer.done.wait()
        return consumer
    finally:
        pipeline.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await real_consumer.stop()
        await real_producer.stop()


async def _no_outputs(record: InboundRecord) -> list[OutboundRecord]:
    return []


async def test_a_full_window_waits_for_the_commit_that_frees_it_without_pausing() -> None:
    consumer = await _consume(_no_outputs, 40, 4)
    # ten windows, each freed by a commit that the window itself asked for: the commit
    # interval (30 s) is far beyond the test's bound, and nothing paused
    assert consumer.pauses == 0


async def test_a_window_full_for_a_poll_interval_pauses_and_a_commit_resumes_it() -> None:
    release = asyncio.Event()

    async def slow(record: InboundRecord) -> list[OutboundRecord]:
        await release.wait()
        return []

    async def release_later() -> None:
        await asyncio.sleep(0.3)  # longer than a poll interval (100 ms)
        release.set()

    releasing = asyncio.create_task(release_later())
    consumer = await _consume(slow, 8, 4)
    await releasing
    # paused while full, resumed once the commit freed the window (not at the 30 s interval)
    assert consumer.pauses >= 1 and not consumer.paused
