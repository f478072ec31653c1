"""``streamproc demo``: the whole pipeline on one machine, with real parts.

A Tansu broker, the topics from topics/, one worker process talking to the model servers
the caller runs; the shipped samples are published and their verdicts printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer

from streamproc.config import InferenceSettings, TopicSettings
from streamproc.decision.explain_report import summary as why_line
from streamproc.dev.devstack import Broker, ManagedProcess, sigterm_unwinds, wait_for_port
from streamproc.dev.samples import publish_jsonl
from streamproc.errors import ConfigError, safe_text
from streamproc.schemas import Verdict
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
    #: Stop once every sample has its result (the test's and scripts' mode).
    until_done: bool = False
    results_timeout: float = 900.0


def _say(text: str) -> None:
    print(text, flush=True)  # noqa: T201 - the demo talks to a person


def run_demo(options: DemoOptions) -> None:
    """Run the stack over the samples, printing each verdict and dead letter as it arrives.

    Stops at Ctrl-C or SIGTERM, when ``duration`` has run out since publishing, or (with
    ``until_done``) once every sample has its result; prints a summary in every case.

    Raises:
        ConfigError: a part did not start, or some samples got no result before the stop.
    """
    topics = TopicSettings()
    options.run_dir.mkdir(parents=True, exist_ok=True)
    with sigterm_unwinds(), contextlib.ExitStack() as stack:
        broker = stack.enter_context(Broker(options.run_dir / "broker.log"))
        _say(f"broker       Tansu on {broker.bootstrap} (memory storage)")
        report = asyncio.run(
            apply_topics(broker.bootstrap, load_topic_specs(options.topics_dir), replication_factor=1)
        )
        _say("topics       " + ", ".join(report.created + report.unchanged))
        worker = stack.enter_context(_worker(options, broker.bootstrap))
        metrics_url = f"http://127.0.0.1:{options.metrics_port}/metrics"
        _say(f"worker       pid {worker.process.pid if worker.process else '?'}, metrics at {metrics_url}")

        published = asyncio.run(_publish_samples(broker.bootstrap, options.samples_dir, topics))
        deadline = None if options.duration is None else time.monotonic() + options.duration
        _say(f"published    {published} events from {options.samples_dir}/ (some malformed on purpose)\n")
        printer = _Printer(_titles(options.samples_dir))
        try:
            asyncio.run(
                _collect(broker.bootstrap, topics, published, worker, printer, _wait(options, deadline))
            )
            if len(printer.results) == published and not options.until_done:
                _say(
                    "\nevery sample has its result; "
                    + ("press Ctrl-C to stop" if deadline is None else "running on")
                )
                _idle(worker, deadline)
        except KeyboardInterrupt:
            _say("\ninterrupted")
        printer.summary(metrics_url, published)
        _say("stopping …")
    _say(f"stopped; logs in {options.run_dir}/")
    if len(printer.results) < published:
        raise ConfigError(
            f"{published - len(printer.results)} of {published} samples got no result; "
            f"see {options.run_dir}/worker.log"
        )


def _wait(options: DemoOptions, deadline: float | None) -> float:
    """Seconds to wait for the results: until the deadline, at most ``results_timeout``."""
    return (
        options.results_timeout
        if deadline is None
        else max(0.0, min(options.results_timeout, deadline - time.monotonic()))
    )


def _idle(worker: ManagedProcess, deadline: float | None) -> None:
    while worker.alive() and (deadline is None or time.monotonic() < deadline):
        time.sleep(0.5)


@contextlib.contextmanager
def _worker(options: DemoOptions, bootstrap: str) -> Iterator[ManagedProcess]:
    """One worker process on the demo's broker and model servers, once its metrics answer."""
    env = {
        "STREAMPROC_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "STREAMPROC_KAFKA__SESSION_TIMEOUT_SECONDS": str(Broker.SESSION_TIMEOUT_SECONDS),
        "STREAMPROC_INFERENCE__BASE_URL": options.generative.base_url,
        "STREAMPROC_INFERENCE__MODEL": options.generative.model,
        "STREAMPROC_METRICS__PORT": str(options.metrics_port),
        "STREAMPROC_METRICS__HOST": "127.0.0.1",
        "STREAMPROC_POLICY__PATHS": json.dumps([str(options.policies_dir.resolve())]),
    }
    if options.embedding is not None:
        env["STREAMPROC_EMBEDDING__BASE_URL"] = options.embedding.base_url
        env["STREAMPROC_EMBEDDING__MODEL"] = options.embedding.model
    worker = ManagedProcess(
        "worker", [sys.executable, "-m", "streamproc", "worker"], options.run_dir / "worker.log", env
    )
    with worker:
        if not wait_for_port("127.0.0.1", options.metrics_port, timeout=60):
            raise ConfigError(f"the worker did not start; its log:\n{worker.log_tail()}")
        yield worker


async def _publish_samples(bootstrap: str, samples_dir: Path, topics: TopicSettings) -> int:
    total = 0
    for name, attr in _SAMPLE_FILES.items():
        path = samples_dir / name
        if not path.is_file():
            raise ConfigError(f"sample file {path} is missing; run the demo from the repository root")
        total += await publish_jsonl(bootstrap, getattr(topics, attr), [path], restamp=True)
    return total


async def _collect(
    bootstrap: str,
    topics: TopicSettings,
    expected: int,
    worker: ManagedProcess,
    printer: _Printer,
    within: float,
) -> None:
    """Print verdicts and dead letters as they arrive, until one per published event has,
    or ``within`` seconds have passed."""
    consumer = AIOKafkaConsumer(
        topics.verdicts, topics.dlq, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        async with asyncio.timeout(within):
            while len(printer.results) < expected:
                if not worker.alive():
                    raise ConfigError(f"the worker exited; its log:\n{worker.log_tail()}")
                batches = await consumer.getmany(timeout_ms=500)
                for tp, messages in batches.items():
                    for message in messages:
                        if message.value:
                            printer.result(tp.topic, orjson.loads(message.value))
    except TimeoutError:
        _say(f"\nstopped waiting after {within:.0f} s")
    finally:
        await consumer.stop()


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


class _Printer:
    """One line per result as it arrives; the counts at the end."""

    def __init__(self, titles: dict[str, str]) -> None:
        self._titles = titles
        self.results: list[dict[str, Any]] = []
        _say(f"{'decision':8}  {'id':8}  {'decided by':44}  {'highest score':22}  title")

    def result(self, topic: str, value: dict[str, Any]) -> None:
        self.results.append(value)
        if "decision" not in value:  # a dead letter
            _say(
                f"{'DLQ':8}  {value.get('key') or '-':8}  {value['reason']:44}  {value['error_message'][:80]}"
            )
            return
        decided = value["decided_by"]
        by = f"{decided['kind']}:{decided['id']}" if decided.get("id") else decided["kind"]
        scores = value["scores"]
        top = max(scores, key=scores.__getitem__) if scores else None
        highest = f"{top} {scores[top]:.2f}" if top else "-"
        title = self._titles.get(value["content_id"], "")[:50]
        _say(f"{value['decision']:8}  {value['content_id']:8}  {by:44}  {highest:22}  {title}")
        verdict = Verdict.model_validate(value)
        _say(f"{'':18}why: {why_line(verdict)}")
        if verdict.seller_message:
            _say(
                f"{'':18}message ({verdict.seller_message_locale}): {safe_text(verdict.seller_message, 100)}"
            )

    def summary(self, metrics_url: str, published: int) -> None:
        verdicts = [r for r in self.results if "decision" in r]
        decisions = Counter(v["decision"] for v in verdicts)
        # the model decided where its scores did (a category or nothing crossed a threshold)
        kinds = {"category": "model", "none": "model"}
        deciders = Counter(kinds.get(v["decided_by"]["kind"], v["decided_by"]["kind"]) for v in verdicts)
        _say(
            f"\n{len(self.results)} of {published} samples answered: {len(verdicts)} verdicts "
            f"({', '.join(f'{k} {n}' for k, n in sorted(decisions.items())) or 'none'}; decided by "
            f"{', '.join(f'{k} {n}' for k, n in sorted(deciders.items())) or 'nothing'}), "
            f"{len(self.results) - len(verdicts)} dead letters"
        )
        if verdicts:
            _say(f"policy {', '.join(sorted({v['policy_version'] for v in verdicts}))}")
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
