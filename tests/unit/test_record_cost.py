"""What one large record costs the worker's event loop, against an ordinary record's cost.

Every kind of record in tests/large_records.py (about 1 MB in one text field, or that field at
its schema bound; U+FDFA, which NFKC lengthens 18-fold, or plain text) goes through the worker's
processor, from the raw bytes to its outputs, with the model answering at once through the
worker's own HTTP client. The processor runs on the event loop and yields only while it waits
for the model, so the CPU time of the loop's thread (the in-process model's answers included)
is the loop time the record takes.

The bound is a ratio to an ordinary listing measured just before each large record, in the same
thread: CPU seconds alone measure the machine too (the same record took 31 ms on a quiet run
and 51 ms in a full ``make test``, beside the model servers). Best of three for the large
record, of five for the ordinary one.
"""

from __future__ import annotations

import time

import orjson

from load.instant import instant_processor
from load.stack import ROOT
from streamproc.config import Settings
from streamproc.stream import InboundRecord
from streamproc.worker import Processor
from tests.factories import listing_dict
from tests.large_records import FIELDS, large_records

#: The most ordinary records one record may cost, whatever it holds: the costliest (100
#: attribute values of 2,000 U+FDFA each, normalised and folded for the rules) costs about
#: 55; before the input bounds, one record became a 72 MB model request.
MAX_ORDINARY_RECORDS = 150
RUNS, ORDINARY_RUNS = 3, 5


class _Meter:
    """Each record through the processor at a new offset; the loop thread's CPU seconds."""

    def __init__(self, processor: Processor) -> None:
        self._processor, self._offset = processor, 0

    async def best(self, topic: str, value: bytes, runs: int) -> float:
        costs = []
        for _ in range(runs):
            self._offset += 1
            start = time.thread_time()
            await self._processor.process(InboundRecord(topic, 0, self._offset, b"k", value))
            costs.append(time.thread_time() - start)
        return min(costs)


async def test_no_large_record_costs_the_event_loop_more_than_150_ordinary_ones() -> None:
    settings = Settings()
    processor, _ = instant_processor(settings, ROOT / "policies", http=True)
    meter, ordinary = _Meter(processor), orjson.dumps(listing_dict())
    await meter.best(settings.topics.listings, ordinary, ORDINARY_RUNS)  # first-use costs
    records = large_records(4 * len(FIELDS))  # each field with each text, over and at its bound
    ratios: dict[str, float] = {}
    for large in records:
        topic = settings.topics.listings if large.content_type == "listing" else settings.topics.videos
        baseline = await meter.best(settings.topics.listings, ordinary, ORDINARY_RUNS)
        cost = await meter.best(topic, large.value, RUNS)
        name = f"{large.field} {large.text} {'over' if large.oversize else 'at'} bound"
        ratios[name] = cost / baseline
        print(f"{name}: {cost * 1000:.1f} ms CPU, {ratios[name]:.0f} ordinary records")
    slowest = max(ratios, key=ratios.__getitem__)
    assert ratios[slowest] < MAX_ORDINARY_RECORDS, f"{slowest}: {ratios[slowest]:.0f} ordinary records"
