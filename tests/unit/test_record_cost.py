"""What one large record costs the worker's event loop.

Every kind of record in tests/large_records.py (about 1 MB in one text field, or that field at
its schema bound; U+FDFA, which NFKC lengthens 18-fold, or plain text) goes through the worker's
processor, from the raw bytes to its outputs, with the model answering at once through the
worker's own HTTP client. The processor runs on the event loop and yields only while it waits
for the model, so the CPU time it takes bounds the loop time the record takes (the in-process
model's answers are counted too). CPU time, best of three: wall time on a busy two-core machine
would measure the machine.
"""

from __future__ import annotations

import time

from load.instant import instant_processor
from load.stack import ROOT
from streamproc.config import Settings
from streamproc.stream import InboundRecord
from streamproc.worker import Processor
from tests.large_records import FIELDS, large_records

#: Event-loop time one record may take, whatever it holds.
MAX_CPU_SECONDS = 0.050
RUNS = 3


async def _cpu_seconds(processor: Processor, record: InboundRecord) -> float:
    start = time.process_time()
    await processor.process(record)
    return time.process_time() - start


async def test_no_large_record_takes_the_event_loop_50_ms() -> None:
    settings = Settings()
    processor, _ = instant_processor(settings, ROOT / "policies", http=True)
    records = large_records(4 * len(FIELDS))  # each field with each text, over and at its bound
    costs: dict[str, float] = {}
    for n, large in enumerate(records):
        topic = settings.topics.listings if large.content_type == "listing" else settings.topics.videos
        runs = [
            await _cpu_seconds(processor, InboundRecord(topic, 0, RUNS * n + i, b"k", large.value))
            for i in range(RUNS)
        ]
        costs[f"{large.field} {large.text} {'over' if large.oversize else 'at'} bound"] = min(runs)
    slowest = max(costs, key=costs.__getitem__)
    print(f"slowest: {slowest}, {costs[slowest] * 1000:.1f} ms CPU")
    assert costs[slowest] < MAX_CPU_SECONDS, f"{slowest}: {costs[slowest] * 1000:.1f} ms"
