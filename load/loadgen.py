"""Open-loop load generator: Poisson arrivals at a target rate, verdicts read back, latency reported.

Open loop means events are sent on their own schedule, whatever the system's speed, and
each latency is measured from the event's scheduled send time (no coordinated omission).

    python -m load.loadgen --bootstrap 127.0.0.1:9092 --rate 20 --duration 60 --out load/results/run

writes ``report.json``, ``report.md`` and ``latency.png`` into ``--out``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from pathlib import Path

import click
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from load.report import RunReport, summarise
from load.workload import Event, WorkloadMix, arrival_offsets, make_events, topic_of
from streamproc.config import TopicSettings

__all__ = ["open_loop"]


async def _verdict_reader(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    """A consumer positioned at the current end of the verdict topic (no group)."""
    # A short fetch wait: the measuring side must not add latency of its own.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10)
    await consumer.start()
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
    if not partitions:
        await consumer.stop()
        raise click.ClickException(f"topic {topic} does not exist; run `streamproc topics apply` first")
    consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
    await consumer.seek_to_end()
    for tp in consumer.assignment():
        await consumer.position(tp)  # resolve the end now, before anything is sent
    return consumer


async def open_loop(
    bootstrap: str,
    topics: TopicSettings,
    events: Sequence[Event],
    rate: float,
    *,
    name: str = "open loop",
    seed: int = 1,
    settle_seconds: float = 60.0,
) -> RunReport:
    """Send ``events`` at ``rate``/s (Poisson), wait for their verdicts, and summarise."""
    offsets = arrival_offsets(len(events), rate, random.Random(seed))  # noqa: S311
    reader = await _verdict_reader(bootstrap, topics.verdicts)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    scheduled: dict[bytes, float] = {}
    latencies: dict[bytes, float] = {}
    # What the verdict says the worker spent: (processing, inference) seconds.
    spent: dict[bytes, tuple[float, float]] = {}
    done = asyncio.Event()
    start = time.perf_counter()

    async def read() -> None:
        while len(latencies) < len(events):
            batches = await reader.getmany(timeout_ms=200)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    key = record.key
                    if key in scheduled and key not in latencies:
                        latencies[key] = now - scheduled[key]
                        spent[key] = _spent(record.value)
        done.set()

    reading = asyncio.create_task(read())
    try:
        for event, offset in zip(events, offsets, strict=True):
            delay = start + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            scheduled[event.key] = start + offset
            await producer.send(topic_of(topics, event), event.value, key=event.key)
        await producer.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settle_seconds + offsets[-1] - (time.perf_counter() - start)):
                await done.wait()
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        await producer.stop()
        await reader.stop()
    samples = [(scheduled[key] - start, latency) for key, latency in latencies.items()]
    report = RunReport.of(name, rate, offsets, len(events), samples)
    # Where the time went: Kafka hops and waits (send → worker, verdict → reader), the
    # worker's own work (and its concurrency gate), the model requests.
    report.stages = {
        "kafka_and_waits": summarise([latencies[k] - spent[k][0] for k in latencies]),
        "worker_excluding_model": summarise([spent[k][0] - spent[k][1] for k in latencies]),
        "model_including_gate": summarise([spent[k][1] for k in latencies]),
    }
    return report


def _spent(value: bytes | None) -> tuple[float, float]:
    try:
        latency = orjson.loads(value or b"{}").get("latency") or {}
        return float(latency.get("processing_seconds") or 0.0), float(latency.get("inference_seconds") or 0.0)
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 0.0, 0.0


@click.command()
@click.option("--bootstrap", default="127.0.0.1:9092", show_default=True, help="Kafka bootstrap servers.")
@click.option("--rate", type=click.FloatRange(min=0.01), required=True, help="Events per second offered.")
@click.option("--duration", type=click.FloatRange(min=1), default=60, show_default=True, help="Seconds.")
@click.option("--video-share", type=click.FloatRange(0, 1), default=0.3, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--settle", type=float, default=60, show_default=True, help="Seconds to wait for stragglers.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the report.")
def main(
    bootstrap: str, rate: float, duration: float, video_share: float, seed: int, settle: float, out: Path
) -> None:
    """Offer Poisson traffic to a running deployment and report end-to-end latency."""
    mix = WorkloadMix(video_share=video_share)
    events = make_events(max(1, int(rate * duration)), seed=seed, mix=mix, run=f"{time.time():.0f}")
    run = open_loop(bootstrap, TopicSettings(), events, rate, seed=seed, settle_seconds=settle)
    report = asyncio.run(run)
    for path in report.write(out):
        click.echo(f"wrote {path}")
    click.echo(report.to_markdown())


if __name__ == "__main__":
    main()
