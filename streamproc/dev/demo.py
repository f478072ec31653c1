"""``streamproc demo``: the whole pipeline on one machine, with real parts.

A Tansu broker, the topics from topics/, one worker process talking to the model servers
the caller runs; the shipped samples are published and their verdicts printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer

from streamproc.config import InferenceSettings, TopicSettings
from streamproc.dev.devstack import Broker, ManagedProcess, wait_for_port
from streamproc.dev.samples import publish_jsonl
from streamproc.errors import ConfigError
from streamproc.topics import apply_topics, load_topic_specs

__all__ = ["DemoOptions", "run_demo"]

_SAMPLE_FILES = {"listings.jsonl": "listings", "videos.jsonl": "videos", "malformed.jsonl": "listings"}


@dataclass(frozen=True)
class DemoOptions:
    #: The model servers, running (started by the caller when it serves them itself).
    generative: InferenceSettings
    #: None: the generative server answers embeddings requests too.
    embedding: InferenceSettings | None
    duration: float | None
    samples_dir: Path
    topics_dir: Path
    policies_dir: Path
    metrics_port: int
    run_dir: Path
    results_timeout: float = 900.0


def _say(text: str) -> None:
    print(text, flush=True)  # noqa: T201 - the demo talks to a person


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(options: DemoOptions) -> None:
    started = time.monotonic()
    topics = TopicSettings()
    options.run_dir.mkdir(parents=True, exist_ok=True)
    stack = contextlib.ExitStack()
    # SIGTERM stops like Ctrl-C: through the ExitStack, so child processes are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    with stack:
        broker = stack.enter_context(Broker(options.run_dir / "broker.log"))
        _say(f"broker       Tansu on {broker.bootstrap} (memory storage)")
        model_env = {
            "STREAMPROC_INFERENCE__BASE_URL": options.generative.base_url,
            "STREAMPROC_INFERENCE__MODEL": options.generative.model,
        }
        if options.embedding is not None:
            model_env["STREAMPROC_EMBEDDING__BASE_URL"] = options.embedding.base_url
            model_env["STREAMPROC_EMBEDDING__MODEL"] = options.embedding.model

        report = asyncio.run(
            apply_topics(broker.bootstrap, load_topic_specs(options.topics_dir), replication_factor=1)
        )
        _say("topics       " + ", ".join(report.created + report.unchanged))

        worker = ManagedProcess(
            "worker",
            [sys.executable, "-m", "streamproc", "worker"],
            options.run_dir / "worker.log",
            env={
                "STREAMPROC_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
                **model_env,
                "STREAMPROC_METRICS__PORT": str(options.metrics_port),
                "STREAMPROC_METRICS__HOST": "127.0.0.1",
                "STREAMPROC_POLICY__PATHS": json.dumps([str(options.policies_dir.resolve())]),
            },
        )
        stack.enter_context(worker)
        metrics_url = f"http://127.0.0.1:{options.metrics_port}/metrics"
        if not wait_for_port("127.0.0.1", options.metrics_port, timeout=60):
            raise ConfigError(f"the worker did not start; its log:\n{worker.log_tail()}")
        _say(f"worker       pid {worker.process.pid if worker.process else '?'}, metrics at {metrics_url}")

        published = asyncio.run(_publish_samples(broker.bootstrap, options.samples_dir, topics))
        _say(f"published    {published} events from {options.samples_dir}/ (some malformed on purpose)")
        results = asyncio.run(_collect(broker.bootstrap, topics, published, options.results_timeout, worker))
        _print_summary(results, options.samples_dir, metrics_url)
        if options.duration is None:
            _say("\nrunning; press Ctrl-C to stop")
            with contextlib.suppress(KeyboardInterrupt):
                while worker.alive():
                    time.sleep(1)
        else:
            with contextlib.suppress(KeyboardInterrupt):
                time.sleep(max(0.0, options.duration - (time.monotonic() - started)))
        _say("stopping …")
    _say(f"stopped; logs in {options.run_dir}/")


async def _publish_samples(bootstrap: str, samples_dir: Path, topics: TopicSettings) -> int:
    total = 0
    for name, attr in _SAMPLE_FILES.items():
        path = samples_dir / name
        if not path.is_file():
            raise ConfigError(f"sample file {path} is missing; run the demo from the repository root")
        total += await publish_jsonl(bootstrap, getattr(topics, attr), [path], restamp=True)
    return total


async def _collect(
    bootstrap: str, topics: TopicSettings, expected: int, within: float, worker: ManagedProcess
) -> list[tuple[str, dict[str, Any]]]:
    """Read verdicts and dead letters until one per published event has arrived."""
    consumer = AIOKafkaConsumer(
        topics.verdicts, topics.dlq, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    results: list[tuple[str, dict[str, Any]]] = []
    try:
        async with asyncio.timeout(within):
            await _read_until(consumer, results, expected, worker)
    except TimeoutError as exc:
        raise ConfigError(f"only {len(results)} of {expected} results after {within:.0f} s") from exc
    finally:
        await consumer.stop()
    return results


async def _read_until(
    consumer: AIOKafkaConsumer,
    results: list[tuple[str, dict[str, Any]]],
    expected: int,
    worker: ManagedProcess,
) -> None:
    while len(results) < expected:
        if not worker.alive():
            raise ConfigError(f"the worker exited; its log:\n{worker.log_tail()}")
        batches = await consumer.getmany(timeout_ms=1000)
        for tp, messages in batches.items():
            results.extend((tp.topic, orjson.loads(m.value)) for m in messages if m.value)


def _titles(samples_dir: Path) -> dict[str, str]:
    titles = {}
    for name in ("listings.jsonl", "videos.jsonl"):
        for line in (samples_dir / name).read_bytes().splitlines():
            if line.strip():
                item = orjson.loads(line)
                titles[item.get("listing_id") or item.get("video_id")] = item.get("title") or item.get(
                    "caption", ""
                )
    return titles


def _print_summary(results: list[tuple[str, dict[str, Any]]], samples_dir: Path, metrics_url: str) -> None:
    titles = _titles(samples_dir)
    verdicts = [r for topic, r in results if "decision" in r]
    letters = [r for topic, r in results if "reason" in r and "decision" not in r]
    _say(f"\n{'decision':8}  {'id':8}  {'decided by':44}  {'highest score':22}  title")
    for v in sorted(verdicts, key=lambda v: (v["content_type"], v["content_id"])):
        decided = v["decided_by"]
        by = f"{decided['kind']}:{decided['id']}" if decided.get("id") else decided["kind"]
        scores = v["scores"]
        top = max(scores, key=scores.__getitem__) if scores else None
        highest = f"{top} {scores[top]:.2f}" if top else "-"
        title = titles.get(v["content_id"], "")[:50]
        _say(f"{v['decision']:8}  {v['content_id']:8}  {by:44}  {highest:22}  {title}")
    for letter in letters:
        _say(f"{'DLQ':8}  {letter['key'] or '-':8}  {letter['reason']:44}  {letter['error_message'][:80]}")
    counts = Counter(v["decision"] for v in verdicts)
    _say(
        f"\n{len(verdicts)} verdicts ({', '.join(f'{k} {n}' for k, n in sorted(counts.items()))}), "
        f"{len(letters)} dead letters; policy {', '.join(sorted({v['policy_version'] for v in verdicts}))}"
    )
    with contextlib.suppress(httpx.HTTPError):
        text = httpx.get(metrics_url, timeout=5).text
        shown = [
            line for line in text.splitlines()
            if line.startswith(("streamproc_verdicts_total", "streamproc_dead_letters_total",
                                "streamproc_end_to_end_latency_seconds_count",
                                "streamproc_end_to_end_latency_seconds_sum"))
            and not line.rstrip().endswith(" 0.0")
        ]  # fmt: skip
        _say(f"\nmetrics ({metrics_url}):\n  " + "\n  ".join(shown))
