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
from pathlib import Path

import click

from load.instant import instant_processor
from load.stack import ROOT
from load.workload import make_events, topic_of
from streamproc.config import Settings
from streamproc.stream import InboundRecord
from streamproc.worker import Processor


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
    events = make_events(count, seed=7, run="overhead")
    records = [
        InboundRecord(topic_of(settings.topics, e), 0, n, e.key, e.value) for n, e in enumerate(events)
    ]
    asyncio.run(_process(processor, records[:300]))  # warm caches and lazily built rules
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        asyncio.run(_process(processor, records))
        best = min(best, time.process_time() - started)
    click.echo(f"{1e6 * best / count:.0f} µs CPU per item ({count} events, best of 3, http={http})")
    if top:
        profiler = cProfile.Profile()
        profiler.runcall(asyncio.run, _process(processor, records))
        pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


async def _process(processor: Processor, records: list[InboundRecord]) -> None:
    for record in records:
        await processor.process(record)


if __name__ == "__main__":
    main()
