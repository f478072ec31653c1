"""Reading topics over a time range without a consumer group: for replays of past traffic.

The reader assigns partitions itself and never commits, so it cannot disturb the live
consumer group, and it holds no producer. ``ranges`` turns a time range into offset ranges
per partition once; ``read`` then reads them from any positions (a resumed replay).

Offsets for times come from the broker's time index (``offsets_for_times``): the first offset
whose timestamp is at or after the time. Record timestamps are the producers', so a range may
hold a few records outside the time range and callers filter on ``timestamp_ms``. A broker
that answers the log start for any time (Tansu 0.6 does) only makes the ranges longer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamproc.config import KafkaSettings
from streamproc.errors import ConfigError
from streamproc.kafka_security import client_options, start_client

__all__ = ["KafkaRangeReader", "PartitionRange", "RangeSource", "TimedRecord"]

#: Records taken per fetch: what a slow consumer of ``read`` holds in memory at most.
_FETCH_RECORDS = 200
_FETCH_TIMEOUT_MS = 500
#: How long the earliest record of a partition may take to arrive.
_EARLIEST_WAIT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class TimedRecord:
    topic: str
    partition: int
    offset: int
    #: The record's timestamp (producer's create time, or the broker's log-append time).
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class PartitionRange:
    """The offsets ``[start, end)`` of one partition that a time range covers."""

    topic: str
    partition: int
    start: int
    end: int
    #: The partition's first retained offset, and that record's timestamp when retention has
    #: deleted records before it (log start above 0) and the range starts there; None otherwise.
    #: Above the range's start time, it means traffic the range asks for is gone.
    log_start: int
    earliest_ms: int | None = None

    @property
    def records(self) -> int:
        return self.end - self.start


class RangeSource(Protocol):
    """What a replay reads: offset ranges for a time range, then the records in them."""

    async def ranges(self, topics: Sequence[str], from_ms: int, to_ms: int) -> list[PartitionRange]: ...

    def read(
        self, ranges: Sequence[PartitionRange], positions: Mapping[tuple[str, int], int]
    ) -> AsyncIterator[TimedRecord]: ...


class KafkaRangeReader:
    """One group-less AIOKafkaConsumer; use as ``async with`` (started and stopped)."""

    def __init__(self, bootstrap_servers: str, client_id: str, kafka: KafkaSettings | None = None) -> None:
        self._bootstrap = bootstrap_servers
        self._kafka = kafka
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            client_id=f"{client_id}-replay",
            group_id=None,  # never joins (or commits to) a group
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **(client_options(kafka) if kafka is not None else {}),
        )

    async def __aenter__(self) -> KafkaRangeReader:
        await start_client(
            self._consumer.start,
            self._consumer.stop,
            self._kafka,
            self._bootstrap,
            check="--bootstrap (or STREAMPROC_KAFKA__BOOTSTRAP_SERVERS)",
        )
        # aiokafka 0.14's group-less coordinator starts a task that, if stopped before it first
        # runs, makes stop() raise CancelledError: let it run once.
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._consumer.stop()

    async def ranges(self, topics: Sequence[str], from_ms: int, to_ms: int) -> list[PartitionRange]:
        """Each partition's offsets for records stamped in ``[from_ms, to_ms)``.

        Raises:
            ConfigError: a topic does not exist.
        """
        tps = await self._partitions(topics)
        consumer = self._consumer
        begins, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        starts = await consumer.offsets_for_times(dict.fromkeys(tps, from_ms))
        stops = await consumer.offsets_for_times(dict.fromkeys(tps, to_ms))
        found: list[PartitionRange] = []
        for tp in tps:
            if starts[tp] is None:  # no record at or after from_ms
                start = stop = ends[tp]
            else:
                start = max(starts[tp].offset, begins[tp])
                stop = stops[tp].offset if stops[tp] is not None else ends[tp]
                if stop <= start:  # no answer to go by (see the module's docstring): read to the end
                    stop = ends[tp]
            found.append(PartitionRange(tp.topic, tp.partition, start, min(stop, ends[tp]), begins[tp]))
        # A log that still starts at offset 0 lost nothing, however late its first record.
        earliest = await self._earliest([r for r in found if 0 < r.log_start == r.start < r.end])
        return [
            PartitionRange(
                r.topic, r.partition, r.start, r.end, r.log_start, earliest.get((r.topic, r.partition))
            )
            for r in found
        ]

    async def read(
        self, ranges: Sequence[PartitionRange], positions: Mapping[tuple[str, int], int]
    ) -> AsyncIterator[TimedRecord]:
        """The records of ``ranges``, each partition from its ``positions`` entry (else its
        start), in offset order per partition."""
        consumer, ends = self._consumer, {}
        for r in ranges:
            position = max(positions.get((r.topic, r.partition), r.start), r.start)
            if position < r.end:
                ends[TopicPartition(r.topic, r.partition)] = (position, r.end)
        if not ends:
            return
        consumer.assign(list(ends))
        for tp, (position, _) in ends.items():
            consumer.seek(tp, position)
        while ends:
            batches = await consumer.getmany(*ends, timeout_ms=_FETCH_TIMEOUT_MS, max_records=_FETCH_RECORDS)
            for tp, messages in batches.items():
                end = ends[tp][1]
                for message in messages:
                    if message.offset >= end:
                        break
                    yield _record(message)
            for tp in list(ends):
                # the position, not the last record: compaction and transaction markers leave gaps
                if await consumer.position(tp) >= ends[tp][1]:
                    consumer.pause(tp)  # a new assignment would reset the others' positions
                    del ends[tp]

    async def _partitions(self, topics: Sequence[str]) -> list[TopicPartition]:
        # The client refreshes metadata only of topics it already follows; aiokafka has no
        # public call for the partitions of others.
        cluster = await self._consumer._client.fetch_all_metadata()
        found = []
        for topic in topics:
            partitions = cluster.partitions_for_topic(topic)
            if not partitions:
                where = f"topic {topic} does not exist at {self._bootstrap}"
                raise ConfigError(f"{where}; check the STREAMPROC_TOPICS__ settings")
            found += [TopicPartition(topic, p) for p in sorted(partitions)]
        return found

    async def _earliest(self, ranges: Sequence[PartitionRange]) -> dict[tuple[str, int], int]:
        """The timestamp of each range's first record (ranges that start at the log start)."""
        wanted = {TopicPartition(r.topic, r.partition): r.start for r in ranges}
        found: dict[tuple[str, int], int] = {}
        if not wanted:
            return found
        self._consumer.assign(list(wanted))
        for tp, offset in wanted.items():
            self._consumer.seek(tp, offset)
        try:
            async with asyncio.timeout(_EARLIEST_WAIT_SECONDS):
                while len(found) < len(wanted):
                    batches = await self._consumer.getmany(
                        timeout_ms=_FETCH_TIMEOUT_MS, max_records=len(wanted)
                    )
                    for tp, messages in batches.items():
                        if messages:
                            found.setdefault((tp.topic, tp.partition), messages[0].timestamp)
        except TimeoutError:
            pass  # unknown: not reported as a gap rather than waited for
        return found


def _record(message: Any) -> TimedRecord:
    return TimedRecord(
        message.topic, message.partition, message.offset, message.timestamp, message.key, message.value
    )
