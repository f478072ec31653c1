"""Reading one earlier record back from Kafka by topic, partition and offset (for appeals).

A verdict names where its content event was read (``source``); an appeal re-evaluates that
very record. One consumer without a group is kept open and reused; reads are serialised,
each assigns the partition, seeks to the offset and takes one record.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streamproc.errors import StreamprocError
from streamproc.schemas import SourceRef

__all__ = ["ContentFetcher", "ContentUnavailable", "KafkaContentFetcher"]

log = logging.getLogger(__name__)


class ContentUnavailable(StreamprocError):
    """The record cannot be read back: gone (retention), not there, or Kafka failed."""

    kind = "content_unavailable"


class ContentFetcher(Protocol):
    """What appeal handling needs: the value of the record at ``source``."""

    async def fetch(self, source: SourceRef) -> bytes | None: ...


class KafkaContentFetcher:
    """Fetches single records with one group-less AIOKafkaConsumer, started on first use."""

    def __init__(
        self,
        bootstrap_servers: str,
        client_id: str,
        *,
        timeout_seconds: float,
        security: dict[str, Any] | None = None,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._security = security or {}  # streamproc.kafka_security.client_options
        self._client_id = client_id
        self._timeout = timeout_seconds
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def fetch(self, source: SourceRef) -> bytes | None:
        """The value at ``source``; raises ContentUnavailable naming why it cannot be read."""
        where = f"{source.topic}[{source.partition}]@{source.offset}"
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout):
                    consumer = await self._started()
                    partition = TopicPartition(source.topic, source.partition)
                    consumer.assign([partition])
                    consumer.seek(partition, source.offset)
                    message = await consumer.getone(partition)
            except TimeoutError as exc:
                raise ContentUnavailable(f"no record read at {where} within {self._timeout} s") from exc
            except KafkaError as exc:
                raise ContentUnavailable(f"reading {where} failed: {exc!r}") from exc
        if message.offset != source.offset:
            # The offset is below the log start: the reset moved on to the oldest record left.
            raise ContentUnavailable(f"the record at {where} is gone (retention); oldest is {message.offset}")
        value: bytes | None = message.value
        return value

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                client_id=f"{self._client_id}-content-fetch",
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=1,
                **self._security,
            )
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()
                raise
            self._consumer = consumer
        return self._consumer
