"""Kafka records as plain values, so the processing logic can be tested without a broker."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["InboundRecord", "OutboundRecord"]


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
