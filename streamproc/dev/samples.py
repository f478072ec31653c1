"""Publishing JSONL events, as an upstream service would (used by the demo and `publish`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from streamproc.config import KafkaSettings
from streamproc.kafka_security import client_options, start_client

__all__ = ["iter_jsonl_records", "publish_jsonl"]

_ID_FIELDS = ("listing_id", "video_id")


def iter_jsonl_records(
    files: Iterable[Path], *, restamp: bool, now: datetime | None = None
) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) per non-empty line. Lines that are not JSON objects go out unchanged
    and without a key: streamproc must dead-letter them, so they are published as is."""
    stamp = (now or datetime.now(UTC)).isoformat()
    for path in files:
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError:
                yield None, line
                continue
            if not isinstance(data, dict):
                yield None, line
                continue
            key = next((str(data[f]) for f in _ID_FIELDS if f in data), None)
            value = line
            if restamp and "created_at" in data:
                data["created_at"] = stamp
                value = orjson.dumps(data)
            yield (key.encode() if key is not None else None), value


async def publish_jsonl(
    bootstrap: str, topic: str, files: Iterable[Path], *, restamp: bool, kafka: KafkaSettings | None = None
) -> int:
    """Publish every line of the files to ``topic``; returns how many were acknowledged.

    Raises:
        ConfigError: No broker answers at ``bootstrap`` (the producer is closed first).

    ``kafka`` gives the security settings (TLS, SASL) to connect with.
    """
    security = client_options(kafka) if kafka is not None else {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **security)
    await start_client(producer.start, producer.stop, kafka, bootstrap, check="--bootstrap")
    try:
        futures = [
            await producer.send(topic, value=value, key=key)
            for key, value in iter_jsonl_records(files, restamp=restamp)
        ]
        for future in futures:
            await future
    finally:
        await producer.stop()
    return len(futures)
