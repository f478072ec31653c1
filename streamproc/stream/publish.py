"""Publishing an item's outputs: every record acknowledged by the broker before the item's
offset may be committed, broker errors retried, and size refusals (which retrying cannot mend)
handed back to the caller instead of retried for ever."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

from streamproc.stream.records import OutboundRecord

__all__ = ["Unpublishable", "publish"]

log = logging.getLogger(__name__)

#: The broker's (or the client's) refusals of a record for its size: retrying cannot help.
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)


class Unpublishable(Exception):
    """The broker refused ``records`` for their size: retrying cannot help."""

    def __init__(self, records: list[OutboundRecord], error: Exception) -> None:
        super().__init__(f"{len(records)} records refused for their size: {error}")
        self.records, self.error = records, error


async def publish(producer: AIOKafkaProducer, records: Sequence[OutboundRecord]) -> None:
    """Send all records and wait until the broker has acknowledged every one.

    Broker errors are retried with jittered back-off without end: returning early would
    let the caller commit input whose outputs were never written. A record refused for its
    size is not retried: once the others are acknowledged, ``Unpublishable`` names it.
    """
    refused: list[tuple[OutboundRecord, Exception]] = []
    try:
        await _send_all(producer, records, refused)
    except _SendFailed as exc:
        await _send_with_retries(producer, exc.failed, refused)
    except KafkaError:  # refused before sending (e.g. no metadata yet): all of them again
        await _send_with_retries(
            producer, [r for r in records if all(r is not x for x, _ in refused)], refused
        )
    if refused:
        raise Unpublishable([r for r, _ in refused], refused[0][1])


class _SendFailed(KafkaError):  # type: ignore[misc]
    """Some records were not acknowledged; ``failed`` lists them, the cause says why."""

    def __init__(self, failed: list[OutboundRecord]) -> None:
        super().__init__(f"{len(failed)} records not acknowledged")
        self.failed = failed


async def _send_all(
    producer: AIOKafkaProducer,
    records: Sequence[OutboundRecord],
    refused: list[tuple[OutboundRecord, Exception]],
) -> None:
    """One attempt: the hot path, without the retry machinery's per-call cost. Records refused
    for their size (by the client before sending, or by the broker) go to ``refused``."""
    sent, futures = [], []
    for r in records:
        try:
            futures.append(await producer.send(r.topic, r.value, key=r.key, headers=list(r.headers)))
        except _TOO_LARGE as exc:
            refused.append((r, exc))
        else:
            sent.append(r)
    if len(futures) == 1:
        try:
            await futures[0]
        except _TOO_LARGE as exc:
            refused.append((sent[0], exc))
        except KafkaError as exc:
            raise _SendFailed(sent) from exc
        return
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    failed: list[tuple[OutboundRecord, BaseException]] = []
    for r, o in zip(sent, outcomes, strict=True):
        if isinstance(o, _TOO_LARGE):
            refused.append((r, o))
        elif isinstance(o, BaseException):
            failed.append((r, o))
    if failed:
        raise _SendFailed([r for r, _ in failed]) from failed[0][1]


def _cause(error: BaseException | None) -> BaseException | None:
    return error.__cause__ if isinstance(error, _SendFailed) else error


async def _send_with_retries(
    producer: AIOKafkaProducer, records: list[OutboundRecord], refused: list[tuple[OutboundRecord, Exception]]
) -> None:
    pending = records
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(KafkaError),
        wait=wait_random_exponential(multiplier=0.1, max=5.0),
        before_sleep=lambda state: log.warning(
            "publishing %d records failed, retrying: %r",
            len(pending),
            _cause(state.outcome.exception()) if state.outcome else None,
        ),
    )
    async for attempt in retrying:
        with attempt:
            try:
                await _send_all(producer, pending, refused)
            except _SendFailed as exc:
                pending = exc.failed
                raise
