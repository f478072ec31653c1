"""Dead-letter records: every input that cannot be decoded, with the reason."""

from __future__ import annotations

import base64
from datetime import datetime

from streamproc.schemas import DeadLetter, DeadLetterReason, encode
from streamproc.stream.records import InboundRecord, OutboundRecord

__all__ = ["dead_letter"]


def dead_letter(
    record: InboundRecord,
    reason: DeadLetterReason,
    error: Exception,
    *,
    dlq_topic: str,
    worker: str,
    now: datetime,
) -> OutboundRecord:
    """Wrap a rejected record so it can be inspected and replayed; keeps its key."""
    raw = record.value or b""
    try:
        payload, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    letter = DeadLetter(
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        key=record.key.decode("utf-8", errors="replace") if record.key is not None else None,
        payload=payload,
        payload_encoding=encoding,
        reason=reason,
        error_type=type(error).__name__,
        error_message=str(error),
        failed_at=now,
        worker=worker,
    )
    return OutboundRecord(
        topic=dlq_topic,
        key=record.key,
        value=encode(letter),
        headers=(("content-type", b"application/json"), ("reason", reason.encode())),
    )
