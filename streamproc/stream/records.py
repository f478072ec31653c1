"""Kafka records as plain values, so the processing logic can be tested without a broker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from streamproc.schemas import Verdict, encode

__all__ = ["Handler", "InboundRecord", "OutboundRecord", "Replacement", "verdict_headers", "verdict_records"]


@dataclass(frozen=True, slots=True)
class InboundRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


def verdict_headers(verdict: Verdict) -> tuple[tuple[str, bytes], ...]:
    """Headers of every record that carries a verdict: enforcement can route on them unparsed."""
    return (
        ("content-type", b"application/json"),
        ("decision", verdict.decision.encode()),
        ("kind", verdict.kind.encode()),
        ("idempotency-key", verdict.idempotency_key.encode()),
    )


def verdict_records(verdict: Verdict, *topics: str) -> list[OutboundRecord]:
    """The verdict, encoded once, to each topic, keyed by its content id."""
    key, value, headers = verdict.content_id.encode(), encode(verdict), verdict_headers(verdict)
    return [OutboundRecord(topic, key, value, headers) for topic in topics]


#: What the pipeline runs on each record: its output records, produced before its commit.
Handler = Callable[[InboundRecord], Awaitable[list[OutboundRecord]]]
#: What the pipeline publishes instead when the broker refuses some of a record's outputs
#: for their size (the record, those outputs, the broker's error).
Replacement = Callable[[InboundRecord, Sequence[OutboundRecord], Exception], list[OutboundRecord]]
