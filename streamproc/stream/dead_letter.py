"""Dead letters: every input that cannot be decoded, with the reason, and the one wrapper
that turns a record handler's failures into dead letters instead of exceptions."""

from __future__ import annotations

import base64
import codecs
import hashlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Literal, Protocol

from streamproc.errors import DecodeError, safe_text
from streamproc.schemas import DeadLetter, DeadLetterReason, encode
from streamproc.stream.records import Handler, InboundRecord, OutboundRecord, Replacement

__all__ = ["DeadLetterCounter", "OutputTooLarge", "dead_letter", "dead_lettering", "too_large_letters"]

log = logging.getLogger(__name__)


class DeadLetterCounter(Protocol):
    def dead_letter(self, reason: str) -> None: ...


#: Bounds that keep every dead letter far below a produce request's 1 MiB, whatever the input:
#: JSON escapes a control byte as 6 characters, so the payload prefix costs at most 96 KiB.
PAYLOAD_PREFIX_BYTES = 16 * 1024
ERROR_CHARS = 2000
KEY_CHARS = 1024


def dead_letter(
    record: InboundRecord,
    reason: DeadLetterReason,
    error: Exception,
    *,
    dlq_topic: str,
    worker: str,
    now: datetime,
    payload: bool = True,
) -> OutboundRecord:
    """Wrap a rejected record so it can be inspected and found again (bounded, see
    :class:`DeadLetter`); keeps its key unless the key alone is too long. ``payload`` False
    leaves the value out (its size and hash stay)."""
    raw = record.value or b""
    text, encoding, kept = _prefix(raw if payload else b"")
    key = record.key
    letter = DeadLetter(
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        key=key.decode("utf-8", errors="replace")[:KEY_CHARS] if key is not None else None,
        payload=text,
        payload_encoding=encoding,
        payload_bytes=len(raw),
        payload_sha256=hashlib.sha256(raw).hexdigest(),
        payload_truncated=kept < len(raw),
        reason=reason,
        error_type=type(error).__name__,
        error_message=safe_text(str(error), ERROR_CHARS),
        failed_at=now,
        worker=worker,
    )
    if key is not None and len(key) > KEY_CHARS:  # the same key hashes to the same partition
        key = hashlib.sha256(key).hexdigest().encode()
    return OutboundRecord(
        topic=dlq_topic,
        key=key,
        value=encode(letter),
        headers=(("content-type", b"application/json"), ("reason", reason.encode())),
    )


def _prefix(raw: bytes) -> tuple[str, Literal["utf-8", "base64"], int]:
    """The first PAYLOAD_PREFIX_BYTES of ``raw`` as text (a character cut at the end is left
    out) or else base64, and how many bytes of ``raw`` that is."""
    head = raw[:PAYLOAD_PREFIX_BYTES]
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) == len(raw))
    except UnicodeDecodeError:
        return base64.b64encode(head).decode("ascii"), "base64", len(head)
    return text, "utf-8", len(text.encode("utf-8"))


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
            reason = safe_text(str(exc), ERROR_CHARS)  # quotes the input: one bounded line
            log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason)
            return reject(record, exc.kind, exc)  # type: ignore[arg-type]
        except fatal:
            raise
        except Exception as exc:
            log.exception("internal error on %s[%d]@%d", record.topic, record.partition, record.offset)
            return reject(record, "internal_error", exc)

    return guarded


class OutputTooLarge(Exception):
    """The broker refused some of an item's outputs for their size."""


def too_large_letters(
    *,
    dlq_topic: str,
    worker: str,
    metrics: DeadLetterCounter,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Replacement:
    """What the pipeline publishes when the broker refuses an item's outputs for their size:
    one dead letter of the item without its payload (reason ``output_too_large``), counted,
    so that the partition moves on instead of retrying for ever."""

    def replace(
        record: InboundRecord, refused: Sequence[OutboundRecord], error: Exception
    ) -> list[OutboundRecord]:
        metrics.dead_letter("output_too_large")
        sizes = ", ".join(f"{r.topic} {len(r.value)} bytes" for r in refused)
        cause = OutputTooLarge(f"the broker refused its outputs for their size ({sizes}): {error}")
        return [
            dead_letter(
                record,
                "output_too_large",
                cause,
                dlq_topic=dlq_topic,
                worker=worker,
                now=clock(),
                payload=False,
            )
        ]

    return replace
