"""The worker's per-item CPU without Kafka: ``Processor.process`` on workload events, one
after another, with the instant model; for measuring hot-path changes one by one.

    python -m load.profile_processor [--events 3000] [--http] [--profile 30]

``--http`` reaches the model through the worker's own ``InferenceClient`` and an in-process
server answering in vLLM's format (load/instant.py), whose own work (about 35 µs per item)
counts too. Prints process CPU time per item, the best of three passes, and with
``--profile`` the functions taking the most time.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import time
from collections.abc import Sequence
from pathlib import Path

import click

from load.instant import instant_processor
from load.stack import ROOT
from load.workload import Event, make_events, topic_of
from streamproc.config import Settings
from streamproc.stream import InboundRecord
from streamproc.worker import Processor

__all__ = ["cpu_seconds_per_item", "inbound_records", "main"]


@click.command()
@click.option("--events", "count", type=click.IntRange(min=100), default=3000, show_default=True)
@click.option("--http", is_flag=True, help="Through the worker's own model client (HTTP, decoding).")
@click.option("--policies", type=click.Path(exists=True, path_type=Path), default=ROOT / "policies")
@click.option(
    "--profile", "top", type=click.IntRange(min=0), default=0, help="Print the N costliest functions."
)
def main(count: int, http: bool, policies: Path, top: int) -> None:
    """Print the processor's CPU time per item."""
    settings = Settings()
    processor, _ = instant_processor(settings, policies, http=http)
    records = inbound_records(settings, make_events(count, seed=7, run="overhead"))
    best = cpu_seconds_per_item(processor, records)
    click.echo(f"{1e6 * best:.0f} µs CPU per item ({count} events, best of 3, http={http})")
    if top:
        profiler = cProfile.Profile()
        profiler.runcall(asyncio.run, _process(processor, records))
        pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def inbound_records(settings: Settings, events: Sequence[Event]) -> list[InboundRecord]:
    """The events as the worker's consumer hands them over (one partition, offsets 0, 1, …)."""
    return [InboundRecord(topic_of(settings.topics, e), 0, n, e.key, e.value) for n, e in enumerate(events)]


def cpu_seconds_per_item(
    processor: Processor, records: Sequence[InboundRecord], *, passes: int = 3, warm: bool = True
) -> float:
    """Process CPU time per item of ``processor`` on ``records``, one after another: the
    lowest of ``passes`` passes (CPU time moves far less than wall time on a shared
    machine), after a pass over the first 300 to warm caches and lazily built rules
    (``warm=False``: the caller warmed it)."""
    if warm:
        asyncio.run(_process(processor, records[:300]))
    best = float("inf")
    for _ in range(passes):
        started = time.process_time()
        asyncio.run(_process(processor, records))
        best = min(best, time.process_time() - started)
    return best / len(records)


async def _process(processor: Processor, records: Sequence[InboundRecord]) -> None:
    for record in records:
        await processor.process(record)


if __name__ == "__main__":
    main()
