"""Consumer lag per assigned partition: records between the next offset this consumer will
fetch and the partition's end (high watermark).

The end offsets come from fetch responses, which cost nothing extra; a paused partition is
not fetched, so its end is asked of the broker instead (at most every
``_BROKER_QUERY_INTERVAL_SECONDS``; meanwhile the last known end stands), which keeps the
figure honest during backpressure, when it matters most.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from streamproc.metrics import PipelineRecorder

__all__ = ["LagTracker", "partition_lag"]

log = logging.getLogger(__name__)

_BROKER_QUERY_INTERVAL_SECONDS = 5.0
_BROKER_QUERY_TIMEOUT_SECONDS = 5.0
_POSITION_TIMEOUT_SECONDS = 0.5


def partition_lag(
    ends: Mapping[TopicPartition, int | None], positions: Mapping[TopicPartition, int | None]
) -> dict[TopicPartition, int]:
    """Records behind the end per partition; partitions missing either figure are left out.

    Never negative: an end read before the position moved past it means no lag.
    """
    lags: dict[TopicPartition, int] = {}
    for tp, end in ends.items():
        position = positions.get(tp)
        if end is not None and position is not None:
            lags[tp] = max(0, end - position)
    return lags


class LagTracker:
    """Refreshes ``consumer_lag`` for the consumer's assigned partitions."""

    def __init__(self, consumer: AIOKafkaConsumer, metrics: PipelineRecorder) -> None:
        self._consumer = consumer
        self._metrics = metrics
        self._ends: dict[TopicPartition, int] = {}  # the latest known, fetched or asked for
        self._asked_at: float | None = None
        self._reported: set[TopicPartition] = set()

    async def refresh(self) -> dict[TopicPartition, int]:
        """Update the gauge of every assigned partition; returns the lags set."""
        consumer = self._consumer
        assigned = consumer.assignment()
        paused = consumer.paused()
        fetched = {tp: consumer.highwater(tp) for tp in assigned if tp not in paused}
        self._ends.update({tp: end for tp, end in fetched.items() if end is not None})
        stale = [tp for tp in assigned if fetched.get(tp) is None]
        if stale:
            await self._ask_broker(stale)
        ends = {tp: self._ends.get(tp) for tp in assigned}
        positions = {tp: await self._position(tp) for tp in assigned}
        lags = partition_lag(ends, positions)
        for tp, records in lags.items():
            self._metrics.consumer_lag(tp.topic, tp.partition, records)
        self._reported |= set(lags)
        self.forget(self._reported - set(assigned))
        return lags

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Remove the series of partitions no longer assigned."""
        for tp in list(tps):
            if tp in self._reported:
                self._reported.discard(tp)
                self._metrics.consumer_lag_removed(tp.topic, tp.partition)
            self._ends.pop(tp, None)

    async def _ask_broker(self, tps: list[TopicPartition]) -> None:
        loop = asyncio.get_running_loop()
        if self._asked_at is not None and loop.time() - self._asked_at < _BROKER_QUERY_INTERVAL_SECONDS:
            return
        self._asked_at = loop.time()
        try:
            async with asyncio.timeout(_BROKER_QUERY_TIMEOUT_SECONDS):
                ends = await self._consumer.end_offsets(tps)
        except (KafkaError, TimeoutError) as exc:
            log.debug("end offsets unavailable, lag figures keep their last values: %r", exc)
            return
        self._ends.update(ends)

    async def _position(self, tp: TopicPartition) -> int | None:
        """The next offset to fetch; None while unknown (being reset) or no longer assigned."""
        try:
            async with asyncio.timeout(_POSITION_TIMEOUT_SECONDS):
                return int(await self._consumer.position(tp))
        except (IllegalStateError, KafkaError, TimeoutError):
            return None
