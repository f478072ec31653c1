"""Dead letters: every input that cannot be decoded, with the reason, and the one wrapper
that turns a record handler's failures into dead letters instead of exceptions."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from streamproc.errors import DecodeError
from streamproc.schemas import DeadLetter, DeadLetterReason, encode
from streamproc.stream.records import Handler, InboundRecord, OutboundRecord

__all__ = ["DeadLetterCounter", "dead_letter", "dead_lettering"]

log = logging.getLogger(__name__)


class DeadLetterCounter(Protocol):
    def dead_letter(self, reason: str) -> None: ...


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


def dead_lettering(
    handler: Handler,
    *,
    dlq_topic: str,
    worker: str,
    metrics: DeadLetterCounter,
    fatal: tuple[type[Exception], ...] = (),
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Handler:
    """``handler``, except that it never raises for bad input or bugs: they become dead letters.

    A record that fails to decode is dead-lettered with its error's kind; an unexpected error
    as ``internal_error`` rather than raised, since one bad item must not stop the service and
    hold up every partition behind it. Errors of the ``fatal`` types (e.g. a failing store)
    are raised: the item then stays uncommitted and the service stops, losing nothing.
    """

    def reject(record: InboundRecord, reason: DeadLetterReason, error: Exception) -> list[OutboundRecord]:
        metrics.dead_letter(reason)
        return [dead_letter(record, reason, error, dlq_topic=dlq_topic, worker=worker, now=clock())]

    async def guarded(record: InboundRecord) -> list[OutboundRecord]:
        try:
            return await handler(record)
        except DecodeError as exc:
            log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc)
            return reject(record, exc.kind, exc)  # type: ignore[arg-type]
        except fatal:
            raise
        except Exception as exc:
            log.exception("internal error on %s[%d]@%d", record.topic, record.partition, record.offset)
            return reject(record, "internal_error", exc)

    return guarded
