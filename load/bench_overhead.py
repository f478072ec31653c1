"""Worker overhead: verdicts/s through the streamproc pipeline with a zero-cost model, divided by
msgs/s of a raw aiokafka consume → decode → produce → commit loop, same broker, same data.

    python -m load.bench_overhead [--events 20000] [--repeats 2] [--processes 1,N]

Both run in this process, one after the other, on fresh topics; the best of ``--repeats``
runs of each counts (the machine is shared and noisy). The worker runs the real
decode, policy selection, prompt building, scoring, rules, verdict encoding, metrics,
in-flight window and safe commits; only the model answers instantly. It is measured with
the shipped packs and with the same packs without rules, and once more with the shipped
packs through the worker's own model client (concurrency gate, retries, circuit breaker,
HTTP, reading vLLM's answer) to an in-process server that answers at once in vLLM's format
(load/instant.py). Target: ratio >= 0.5.

``--processes 1,N`` (N defaults to the core count) also measures the worker as separate
processes in one consumer group, as `streamproc worker --processes N` runs it
(load/worker_processes.py), with the shipped packs: 1 process and N processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from load.instant import instant_processor
from load.report import load_average, machine_description
from load.stack import ROOT, broker, fresh_topics, publish_events, without_rules
from load.worker_processes import worker_processes_rate
from load.workload import Event, make_events
from streamproc.config import KafkaSettings, Settings, TopicSettings, WorkerSettings
from streamproc.schemas import decode_event
from streamproc.stream import InboundRecord, OutboundRecord, Pipeline
from streamproc.stream.pipeline import FETCH_WAIT_MS

TARGET = 0.5


async def raw_loop(bootstrap: str, topics: TopicSettings, count: int, *, validate: bool) -> float:
    """Messages/s of the plainest correct loop: decode each record, produce one output, commit."""
    consumer = AIOKafkaConsumer(
        topics.listings,
        topics.videos,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{topics.verdicts}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
        # The worker's fetch wait. Tansu answers a fetch when its wait runs out: with
        # aiokafka's 500 ms default this loop lost one such wait in some runs and not in
        # others (13,800 or 43,800 msgs/s in the same run), and the ratio moved 3x with it.
        fetch_max_wait_ms=FETCH_WAIT_MS,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    await consumer.start()
    done, started = 0, 0.0
    try:
        while done < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            if batches and not started:
                started = time.perf_counter()
            futures = []
            for tp, records in batches.items():
                kind = "listing" if tp.topic == topics.listings else "video"
                for record in records:
                    if validate:
                        content_id = decode_event(kind, record.value).content_id  # type: ignore[arg-type]
                    else:
                        data = orjson.loads(record.value or b"{}")
                        content_id = data.get("listing_id") or data.get("video_id")
                    value = orjson.dumps({"content_id": content_id, "decision": "approve"})
                    futures.append(await producer.send(topics.verdicts, value, key=record.key))
                    done += 1
            await asyncio.gather(*futures)
            if batches:
                await consumer.commit()
        return count / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()


async def worker_loop(
    bootstrap: str, topics: TopicSettings, count: int, policies_dir: Path, *, http: bool = False
) -> float:
    """Items/s through Pipeline + Processor with a model that answers instantly; with ``http``
    through the worker's own model client to a server that answers instantly."""
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, group_id=f"worker-{topics.verdicts}"),
        topics=topics,
        worker=WorkerSettings(max_inflight_items=2048),
    )
    processor, metrics = instant_processor(settings, policies_dir, http=http)
    handled, started = 0, 0.0

    async def handle(record: InboundRecord) -> list[OutboundRecord]:
        nonlocal handled, started
        if not started:
            started = time.perf_counter()
        handled += 1
        return await processor.process(record)

    pipeline = Pipeline(
        settings.kafka, settings.worker, handle, metrics, topics=[topics.listings, topics.videos]
    )
    running = asyncio.create_task(pipeline.run())
    try:
        while handled < count or pipeline.uncommitted:  # every output acknowledged and committed
            if running.done():
                await running  # raises what stopped it
            await asyncio.sleep(0.005)
        return count / (time.perf_counter() - started)
    finally:
        pipeline.stop()
        await running


Measure = Callable[[TopicSettings], Coroutine[Any, Any, float]]


@click.command()
@click.option("--events", "count", type=click.IntRange(min=100), default=20_000, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--processes",
    "process_counts",
    default=None,
    help="Also measure the worker as this many processes, e.g. 1,4 (default 1,<cores>; 0: skip).",
)
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "load" / "results", show_default=True)
def main(count: int, repeats: int, process_counts: str | None, out: Path) -> None:
    """Print the worker-overhead ratio (target >= 0.5) and write it as JSON."""
    run_dir = out / "overhead-run"
    events = make_events(count, seed=7, run="overhead")
    counts = _process_counts(process_counts)
    load_before = load_average()
    with broker(run_dir) as running_broker:
        bootstrap = running_broker.bootstrap
        rule_free = without_rules(run_dir / "policies-without-rules")
        contenders: dict[str, Measure] = {
            "raw aiokafka loop (orjson decode)": lambda t: raw_loop(bootstrap, t, count, validate=False),
            "raw aiokafka loop (schema decode)": lambda t: raw_loop(bootstrap, t, count, validate=True),
            "streamproc worker, shipped packs": lambda t: worker_loop(bootstrap, t, count, ROOT / "policies"),
            "streamproc worker, packs without rules": lambda t: worker_loop(bootstrap, t, count, rule_free),
            _HTTP: lambda t: worker_loop(bootstrap, t, count, ROOT / "policies", http=True),
        }
        for n in counts:
            contenders[_processes_name(n)] = _in_processes(bootstrap, events, n)
        best: dict[str, float] = {}
        # This process's CPU time per message (µs), lowest of the rounds: it moves far less
        # than msgs/s when other work shares the machine (not for separate worker processes).
        cpu: dict[str, float] = {}
        for round_ in range(repeats):
            for name, measure in contenders.items():
                topics = fresh_topics(bootstrap)
                if not name.startswith(_PROCESSES):  # those publish once the group has settled
                    asyncio.run(publish_events(bootstrap, topics, events))
                cpu_before = time.process_time()
                rate = asyncio.run(measure(topics))
                cpu_us = 1e6 * (time.process_time() - cpu_before) / count
                best[name] = max(rate, best.get(name, 0.0))
                if not name.startswith(_PROCESSES):
                    cpu[name] = min(cpu_us, cpu.get(name, float("inf")))
                click.echo(f"round {round_ + 1}: {name}: {rate:,.0f} msgs/s, {cpu_us:.0f} µs CPU/msg")
    baseline = best["raw aiokafka loop (orjson decode)"]
    ratios = {name: rate / baseline for name, rate in best.items()}
    result = {
        "benchmark": "worker overhead",
        "machine": machine_description(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "events": count,
        "msgs_per_second": best,
        "ratio_vs_raw_orjson_loop": ratios,
        "cpu_us_per_msg": cpu,
        "target": TARGET,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    click.echo("")
    for name, rate in best.items():
        cpu_column = f"   {cpu[name]:5.0f} µs CPU/msg" if name in cpu else ""
        click.echo(f"{name:42s} {rate:9,.0f} msgs/s   ratio {ratios[name]:.3f}{cpu_column}")
    ratio = ratios["streamproc worker, shipped packs"]
    click.echo(f"\nworker overhead ratio (shipped packs / raw loop): {ratio:.3f}  (target >= {TARGET})")
    if len(counts) > 1:
        one, most = best[_processes_name(counts[0])], best[_processes_name(counts[-1])]
        result["process_scaling"] = {"processes": counts, "rate_ratio_last_to_first": most / one}
        (out / "overhead.json").write_text(json.dumps(result, indent=2) + "\n")
        click.echo(f"{counts[-1]} processes / {counts[0]}: {most / one:.2f}x")
    click.echo(
        f"machine: {result['machine']}; load {load_before} before, {result['load_average_after']} after"
    )


_PROCESSES = "streamproc worker as"
_HTTP = "streamproc worker, shipped packs, its HTTP client"


def _processes_name(n: int) -> str:
    return f"{_PROCESSES} {n} process{'es' if n > 1 else ''}, shipped packs"


def _process_counts(option: str | None) -> list[int]:
    if option is None:
        return sorted({1, os.cpu_count() or 1})
    try:
        counts = sorted({int(part) for part in option.split(",") if part.strip()})
    except ValueError:
        raise click.BadParameter(
            f"expected counts like 1,4, got {option!r}", param_hint="--processes"
        ) from None
    if counts == [0]:
        return []
    if not counts or counts[0] < 1 or counts[-1] > 24:
        raise click.BadParameter(
            "counts from 1 to 24 (the content topics' partitions)", param_hint="--processes"
        )
    return counts


def _in_processes(bootstrap: str, events: list[Event], processes: int) -> Measure:
    async def measure(topics: TopicSettings) -> float:
        return await asyncio.to_thread(
            worker_processes_rate, bootstrap, topics, events, ROOT / "policies", processes
        )

    return measure


if __name__ == "__main__":
    main()
