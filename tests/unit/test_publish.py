"""Publishing outputs: every record acknowledged before returning, broker errors retried,
size refusals handed back once instead of retried; dead letters bounded whatever the input."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, NotLeaderForPartitionError

from streamproc.schemas import DeadLetter
from streamproc.stream import (
    InboundRecord,
    OutboundRecord,
    Unpublishable,
    dead_letter,
    publish,
    too_large_letters,
)
from streamproc.stream.dead_letter import PAYLOAD_PREFIX_BYTES


class FlakyProducer:
    """Fails the first acknowledgement of records whose value is in ``fail_once``; refuses values
    longer than ``max_size`` as aiokafka does (before sending), or as the broker does (``broker``)."""

    def __init__(
        self,
        fail_once: set[bytes],
        refuse_first_send: bool = False,
        max_size: int = 1 << 20,
        broker: bool = False,
    ) -> None:
        self.fail_once = set(fail_once)
        self.refuse_first_send = refuse_first_send
        self.max_size, self.broker = max_size, broker
        self.sent: list[bytes] = []

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, headers: Any
    ) -> asyncio.Future[None]:
        if self.refuse_first_send:
            self.refuse_first_send = False
            raise KafkaTimeoutError("no metadata yet")
        if len(value) > self.max_size and not self.broker:
            raise MessageSizeTooLargeError(f"{len(value)} bytes")
        self.sent.append(value)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if len(value) > self.max_size:
            future.set_exception(MessageSizeTooLargeError())
        elif value in self.fail_once:
            self.fail_once.discard(value)
            future.set_exception(NotLeaderForPartitionError())
        else:
            future.set_result(None)
        return future


def records(*values: bytes) -> list[OutboundRecord]:
    return [OutboundRecord("moderation.verdicts.v1", b"L-1", v) for v in values]


async def test_only_unacknowledged_records_are_sent_again() -> None:
    producer = FlakyProducer({b"b"})
    await publish(producer, records(b"a", b"b", b"c"))
    assert producer.sent == [b"a", b"b", b"c", b"b"]


async def test_a_single_record_is_retried_until_acknowledged() -> None:
    producer = FlakyProducer({b"a"})
    await publish(producer, records(b"a"))
    assert producer.sent == [b"a", b"a"]


async def test_a_refused_send_retries_every_record() -> None:
    producer = FlakyProducer(set(), refuse_first_send=True)
    await publish(producer, records(b"a", b"b"))
    assert producer.sent == [b"a", b"b"]


@pytest.mark.parametrize("broker", [False, True])
async def test_a_record_refused_for_its_size_is_handed_back_once_and_the_rest_published(broker: bool) -> None:
    producer = FlakyProducer({b"c"}, max_size=4, broker=broker)
    with pytest.raises(Unpublishable) as refused:
        await publish(producer, records(b"a", b"too large", b"c"))
    assert [r.value for r in refused.value.records] == [b"too large"]
    assert isinstance(refused.value.error, MessageSizeTooLargeError)
    assert [v for v in producer.sent if v != b"too large"] == [b"a", b"c", b"c"]  # c retried, not the refused


def _poison(size: int, key: bytes = b"L-1") -> InboundRecord:
    return InboundRecord("content.listings.v1", 3, 42, key, b"\x01" * size)


def _letter(record: InboundRecord, error: Exception) -> tuple[OutboundRecord, DeadLetter]:
    out = dead_letter(
        record, "schema_validation", error, dlq_topic="moderation.dlq.v1", worker="w", now=datetime.now(UTC)
    )
    return out, DeadLetter.model_validate_json(out.value)


def test_a_dead_letter_is_bounded_whatever_the_record_and_identifies_it() -> None:
    record = _poison(180 * 1024)
    out, letter = _letter(record, ValueError("bad " * 100_000))
    assert len(out.value) < 120 * 1024  # the 180 KB record of control bytes made a 1 MB letter
    assert letter.payload == "\x01" * PAYLOAD_PREFIX_BYTES and letter.payload_truncated
    assert letter.payload_bytes == 180 * 1024
    assert letter.payload_sha256 == hashlib.sha256(record.value or b"").hexdigest()
    assert len(letter.error_message) < 2100 and letter.error_message.endswith("more characters)")
    small_out, small = _letter(_poison(10), ValueError("bad"))
    assert (small.payload, small.payload_truncated, small.error_message) == ("\x01" * 10, False, "bad")
    assert small_out.key == b"L-1"


def test_a_payload_cut_inside_a_character_stays_text_and_a_huge_key_is_hashed() -> None:
    value = "é".encode() * PAYLOAD_PREFIX_BYTES  # 2 bytes each: the cut falls on a boundary or not
    record = InboundRecord("content.listings.v1", 0, 1, b"k" * 100_000, b"x" + value)
    out, letter = _letter(record, ValueError("bad"))
    assert letter.payload_encoding == "utf-8" and letter.payload == "x" + "é" * (
        (PAYLOAD_PREFIX_BYTES - 1) // 2
    )
    assert out.key == hashlib.sha256(b"k" * 100_000).hexdigest().encode()
    assert letter.key == "k" * 1024


def test_outputs_too_large_become_one_dead_letter_without_the_payload_counted() -> None:
    counted: list[str] = []

    class Counter:
        def dead_letter(self, reason: str) -> None:
            counted.append(reason)

    replace = too_large_letters(dlq_topic="moderation.dlq.v1", worker="w", metrics=Counter())
    refused = OutboundRecord("moderation.verdicts.v1", b"L-1", b"v" * 2_000_000)
    [out] = replace(_poison(100), [refused], MessageSizeTooLargeError())
    letter = DeadLetter.model_validate_json(out.value)
    assert (out.topic, letter.reason, counted) == (
        "moderation.dlq.v1",
        "output_too_large",
        ["output_too_large"],
    )
    assert letter.payload == "" and letter.payload_bytes == 100 and letter.payload_truncated
    assert "moderation.verdicts.v1 2000000 bytes" in letter.error_message
