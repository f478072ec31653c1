"""An end-to-end check of a running deployment: one listing in, its verdict out.

`streamproc smoke` (and the chart's `helm test`) publishes one harmless listing with a fresh
id to the listings topic and reads the verdicts and dead-letter topics, from their ends as
they were just before publishing, until that listing's verdict or dead letter arrives.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamproc.config import KafkaSettings, TopicSettings
from streamproc.errors import ConfigError
from streamproc.kafka_security import client_options, start_client
from streamproc.schemas.listing import ListingEvent

__all__ = ["SMOKE_SELLER_ID", "SmokeResult", "smoke_listing", "smoke_test"]

#: The seller of every smoke listing: enforcement consumers can recognise (and skip) them.
SMOKE_SELLER_ID = "streamproc-smoke"


@dataclass(frozen=True)
class SmokeResult:
    """What came back for the smoke listing; ``outcome`` "timeout" when nothing did."""

    listing_id: str
    outcome: Literal["verdict", "dead_letter", "timeout"]
    seconds: float
    record: dict[str, Any] | None = None


def smoke_listing(now: datetime | None = None) -> ListingEvent:
    """A listing no pack should object to, with an id never used before."""
    return ListingEvent.model_validate(
        {
            "listing_id": f"smoke-{uuid.uuid4().hex}",
            "revision": 0,
            "seller_id": SMOKE_SELLER_ID,
            "title": "Wooden bookshelf, five shelves",
            "description": "Solid pine bookshelf, 180 cm tall. Light scratches on one side. Pick-up only.",
            "category_path": ["Home", "Furniture", "Shelves"],
            "price": {"amount": "40.00", "currency": "EUR"},
            "attributes": {"material": "pine", "condition": "used - good"},
            "created_at": (now or datetime.now(UTC)).isoformat(),
        }
    )


async def smoke_test(kafka: KafkaSettings, topics: TopicSettings, *, within: float) -> SmokeResult:
    """Publish one smoke listing and wait up to ``within`` seconds for what the workers make of it.

    Raises:
        ConfigError: No broker answers at the configured bootstrap servers.
    """
    options = client_options(kafka)
    bootstrap = kafka.bootstrap_servers
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **options)
    await start_client(
        consumer.start, consumer.stop, kafka, bootstrap, check="STREAMPROC_KAFKA__BOOTSTRAP_SERVERS"
    )
    try:
        await _assign_at_end(consumer, [topics.verdicts, topics.dlq])
        listing = smoke_listing()
        started = time.monotonic()
        await _publish(kafka, topics.listings, listing)
        try:
            async with asyncio.timeout(within):
                outcome, record = await _first_answer(consumer, topics, listing.listing_id)
        except TimeoutError:
            return SmokeResult(listing.listing_id, "timeout", time.monotonic() - started)
        return SmokeResult(listing.listing_id, outcome, time.monotonic() - started, record)
    finally:
        await consumer.stop()


async def _assign_at_end(consumer: AIOKafkaConsumer, names: list[str]) -> None:
    partitions = []
    for name in names:
        found = consumer.partitions_for_topic(name) or await _partitions(consumer, name)
        partitions += [TopicPartition(name, p) for p in found]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    # Resolve the end offsets now: records published after this point are the only ones read.
    for partition in partitions:
        await consumer.position(partition)


async def _partitions(consumer: AIOKafkaConsumer, name: str) -> set[int]:
    topics = await consumer.topics()
    if name not in topics:
        raise ConfigError(f"topic {name} does not exist; create the topics first (`streamproc topics apply`)")
    return consumer.partitions_for_topic(name) or set()


async def _publish(kafka: KafkaSettings, topic: str, listing: ListingEvent) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers, acks="all", **client_options(kafka)
    )
    await start_client(
        producer.start, producer.stop, kafka, kafka.bootstrap_servers, check="STREAMPROC_KAFKA__"
    )
    try:
        await producer.send_and_wait(
            topic, listing.model_dump_json().encode(), key=listing.listing_id.encode()
        )
    finally:
        await producer.stop()


async def _first_answer(
    consumer: AIOKafkaConsumer, topics: TopicSettings, listing_id: str
) -> tuple[Literal["verdict", "dead_letter"], dict[str, Any]]:
    while True:
        batches = await consumer.getmany(timeout_ms=500)
        for messages in batches.values():
            for message in messages:
                record = orjson.loads(message.value) if message.value else {}
                if message.topic == topics.dlq and record.get("key") == listing_id:
                    return "dead_letter", record
                if message.topic == topics.verdicts and record.get("content_id") == listing_id:
                    return "verdict", record
