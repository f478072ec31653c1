"""Publishing outputs: every record acknowledged before returning, broker errors retried."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaTimeoutError, NotLeaderForPartitionError

from streamproc.stream import OutboundRecord, publish


class FlakyProducer:
    """Fails the first acknowledgement of records whose value is in ``fail_once``."""

    def __init__(self, fail_once: set[bytes], refuse_first_send: bool = False) -> None:
        self.fail_once = set(fail_once)
        self.refuse_first_send = refuse_first_send
        self.sent: list[bytes] = []

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, headers: Any
    ) -> asyncio.Future[None]:
        if self.refuse_first_send:
            self.refuse_first_send = False
            raise KafkaTimeoutError("no metadata yet")
        self.sent.append(value)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if value in self.fail_once:
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
