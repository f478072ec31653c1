"""Fault scenarios against real workers, a real broker and the real model server.

Each scenario returns ``Figures``; the integration tests (tests/integration/test_faults.py)
assert on them and the reliability report (load/reliability.py) tabulates them. What is
measured, per scenario:

- inputs without a verdict (or a dead letter): must be 0;
- duplicates: verdicts beyond the first for a content id; each worker crash may repeat at
  most the in-flight window, and every copy must carry the same idempotency key;
- approvals produced by errors: an approve decided by an error, or an approve without model
  usage that no rule decided (its model calls all failed): must be 0;
- recovery: seconds from the end of a fault to the next verdict scored by the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from load.faults import FaultProxy, FaultState
from streamproc.config import TopicSettings
from streamproc.dev.devstack import Broker, ManagedProcess
from streamproc.schemas import DeadLetter, Verdict
from streamproc.topics import apply_topics, load_topic_specs

__all__ = [
    "FAST_WORKER_ENV",
    "WINDOW",
    "Collector",
    "Figures",
    "StartWorker",
    "WorkerLike",
    "broker_restart",
    "create_topics",
    "listing",
    "metric_total",
    "model_faults",
    "poll",
    "publish",
    "repeated_sigkill",
]

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 64
#: Small batches and short intervals: a crash repeats little and a restart rejoins fast.
FAST_WORKER_ENV = {
    "STREAMPROC_WORKER__MAX_INFLIGHT_ITEMS": str(WINDOW),
    "STREAMPROC_WORKER__FETCH_MAX_RECORDS": "64",
    "STREAMPROC_WORKER__COMMIT_INTERVAL_SECONDS": "0.2",
    "STREAMPROC_WORKER__LINGER_MS": "1",
    "STREAMPROC_WORKER__DRAIN_TIMEOUT_SECONDS": "1",
    "STREAMPROC_KAFKA__SESSION_TIMEOUT_SECONDS": "3",
    "STREAMPROC_KAFKA__HEARTBEAT_INTERVAL_SECONDS": "0.5",
    "STREAMPROC_KAFKA__REBALANCE_TIMEOUT_SECONDS": "3",
    "STREAMPROC_POLICY__WATCH": "false",
    "STREAMPROC_AUDIT__ENABLED": "false",
}
#: A seller on the shipped listings pack's banned list: a pre-rule rejects its listings
#: without a model call, so thousands of items fit in a short run on a CPU model server.
BANNED_SELLER = "S-13013"


class WorkerLike(Protocol):
    process: ManagedProcess
    metrics_port: int


StartWorker = Callable[..., WorkerLike]


@dataclass
class Figures:
    scenario: str
    inputs: int = 0
    without_verdict: int = 0
    duplicates: int = 0
    duplicate_bound: int = 0
    mixed_keys: int = 0  # content ids whose copies carry different idempotency keys
    error_approvals: int = 0
    recovery_seconds: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    outcome: str = ""  # what the worker did, in words (broker restart)
    fault_decisions: dict[str, int] = field(default_factory=dict)  # "fault: decision" -> verdicts


def listing(listing_id: str, *, banned: bool = False, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": 1,
        "listing_id": listing_id,
        "revision": 0,
        "seller_id": BANNED_SELLER if banned else "S-1",
        "title": f"Handmade ceramic mug {listing_id}",
        "description": "Stoneware, dishwasher safe.",
        "category_path": ["Home", "Kitchen"],
        "price": {"amount": "12.50", "currency": "EUR"},
        "locale": "en-GB",
        "created_at": datetime.now(UTC).isoformat(),
    }
    return data | overrides


async def publish(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def listing_records(items: Sequence[dict[str, Any]]) -> list[tuple[bytes | None, bytes | None]]:
    return [(str(x["listing_id"]).encode(), orjson.dumps(x)) for x in items]


def create_topics(bootstrap: str, suffix: str | None = None) -> TopicSettings:
    """The project's topics under a fresh suffix on ``bootstrap``."""
    suffix = suffix or uuid.uuid4().hex[:8]
    specs = [s.model_copy(update={"name": f"{s.name}.{suffix}"}) for s in load_topic_specs(ROOT / "topics")]
    asyncio.run(apply_topics(bootstrap, specs, replication_factor=1))
    return topic_settings(suffix)


def topic_settings(suffix: str) -> TopicSettings:
    return TopicSettings(**{f: f"{name}.{suffix}" for f, name in TopicSettings().model_dump().items()})


def topic_env(topics: TopicSettings) -> dict[str, str]:
    return {f"STREAMPROC_TOPICS__{f.upper()}": name for f, name in topics.model_dump().items()}


def metric_total(port: int, name: str) -> float:
    """Sum of a metric's samples on a worker's /metrics; 0 if it does not answer."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


class Collector:
    """Reads the verdict and dead-letter topics from the start, on a background thread."""

    def __init__(self, bootstrap: str, topics: TopicSettings) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self.verdicts: list[Verdict] = []
        self.dead_letters: list[DeadLetter] = []
        self._stopping = False
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Collector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping = True
        self._thread.join(15)

    def _run(self) -> None:
        self._loop.run_until_complete(self._read())
        self._loop.close()

    async def _read(self) -> None:
        consumer = AIOKafkaConsumer(
            self._topics.verdicts,
            self._topics.dlq,
            bootstrap_servers=self._bootstrap,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            while not self._stopping:
                with contextlib.suppress(Exception):  # a broker restart: keep polling
                    for tp, messages in (await consumer.getmany(timeout_ms=200)).items():
                        for m in messages:
                            if tp.topic == self._topics.verdicts:
                                self.verdicts.append(Verdict.model_validate_json(m.value or b""))
                            else:
                                self.dead_letters.append(DeadLetter.model_validate_json(m.value or b""))
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    def decided_ids(self) -> set[str]:
        return {v.content_id for v in self.verdicts} | {d.key or "" for d in self.dead_letters}

    def wait_for_ids(self, ids: set[str], within: float) -> bool:
        return poll(lambda: ids <= self.decided_ids(), within)


def poll(condition: Callable[[], bool], within: float, interval: float = 0.1) -> bool:
    """Whether ``condition`` came true within ``within`` seconds, checked every ``interval``."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def error_approval(verdict: Verdict) -> bool:
    """An approve that only an error could have produced."""
    if verdict.decision != "approve":
        return False
    return verdict.decided_by.kind == "error" or (verdict.decided_by.kind != "rule" and verdict.usage is None)


def tally(figures: Figures, verdicts: Sequence[Verdict], expected: set[str]) -> Figures:
    by_id: dict[str, list[Verdict]] = defaultdict(list)
    for v in verdicts:
        by_id[v.content_id].append(v)
    figures.inputs = len(expected)
    figures.without_verdict = len(expected - set(by_id))
    figures.duplicates = sum(len(copies) - 1 for copies in by_id.values())
    figures.mixed_keys = sum(1 for copies in by_id.values() if len({v.idempotency_key for v in copies}) > 1)
    figures.error_approvals = sum(1 for v in verdicts if error_approval(v))
    return figures


def settle(worker: WorkerLike, within: float = 30.0) -> None:
    """Wait until nothing is in flight, then a few commit intervals: every duplicate is out."""
    poll(lambda: not metric_total(worker.metrics_port, "streamproc_items_in_flight"), within, 0.2)
    time.sleep(1.0)


def first_verdict_after(worker: WorkerLike, since: float, within: float) -> float | None:
    """Seconds from ``since`` (monotonic) until ``worker`` reports its first verdict; None if it
    exits or ``within`` passes first."""
    decided = partial(_decided_at_least, worker, 1)
    poll(lambda: decided() or not worker.process.alive(), since + within - time.monotonic(), 0.2)
    seconds = time.monotonic() - since
    return seconds if decided() else None


def _silent(worker: WorkerLike, within: float) -> str:
    """Why a worker gave no verdict, in words, with the end of its log."""
    outcome = _restart_outcome(worker.process, decided=False, log_mark=0)
    tail = worker.process.log_tail(15)
    return f"a restarted worker decided nothing within {within:.0f} s: {outcome}; its log ends:\n{tail}"


def repeated_sigkill(
    bootstrap: str,
    topics: TopicSettings,
    start: StartWorker,
    *,
    kills: int = 5,
    count: int = 3000,
    model_every: int = 50,
    within: float = 120.0,
) -> Figures:
    """SIGKILL the worker ``kills`` times while it works through ``count`` listings, restarting
    it at once each time; every ``model_every``-th listing goes to the model, the rest are
    rejected by a pre-rule.

    The listings arrive in ``kills + 1`` batches: the first before the first worker starts,
    each next one just after a kill, so every restarted worker has work however fast the
    killed one was (rule-decided listings go at hundreds a second, faster than its metrics
    are polled). A worker is killed once its own metrics count a fifth of a batch of
    verdicts, usually with most of its batch still in flight or unread."""
    began = time.monotonic()
    figures = Figures(f"SIGKILL x{kills}, {count} listings", duplicate_bound=kills * WINDOW)
    group = f"kill-{uuid.uuid4().hex[:8]}"  # the same group across restarts
    env = {**FAST_WORKER_ENV, **topic_env(topics), "STREAMPROC_KAFKA__GROUP_ID": group}
    items = [listing(f"L-k{i}", banned=i % model_every != 0) for i in range(count)]
    expected = {str(x["listing_id"]) for x in items}
    size = -(-count // (kills + 1))
    batches = [items[i : i + size] for i in range(0, count, size)]
    per_round = max(1, size // 5)
    asyncio.run(publish(bootstrap, topics.listings, listing_records(batches[0])))
    with Collector(bootstrap, topics) as collector:
        worker = start(**env)
        for batch in batches[1:]:
            if not poll(partial(_decided_at_least, worker, per_round), within, 0.2):
                figures.outcome = f"a worker decided fewer than {per_round} listings in {within:.0f} s"
                break
            killed = _sigkill(worker.process)
            asyncio.run(publish(bootstrap, topics.listings, listing_records(batch)))
            worker = start(**env)
            recovery = first_verdict_after(worker, killed, within)
            if recovery is None:  # the figures say so at once, with why: no further kills
                figures.outcome = _silent(worker, within)
                break
            figures.recovery_seconds.append(recovery)
        else:
            collector.wait_for_ids(expected, within)
        settle(worker)
        verdicts = list(collector.verdicts)
    figures.wall_seconds = time.monotonic() - began
    return tally(figures, verdicts, expected)


#: (fault, proxy settings) in the order model_faults applies them.
MODEL_FAULTS: tuple[FaultState, ...] = (
    FaultState("slow", latency=6.0),
    FaultState("error", status=503),
    FaultState("garbage"),
    FaultState("drop"),
)
MODEL_FAULT_ENV = {
    "STREAMPROC_INFERENCE__TIMEOUT_SECONDS": "3",
    "STREAMPROC_INFERENCE__MAX_ATTEMPTS": "2",
    "STREAMPROC_INFERENCE__BREAKER_FAILURES": "3",
    "STREAMPROC_INFERENCE__BREAKER_RECOVERY_SECONDS": "1",
}


def model_faults(
    bootstrap: str,
    topics: TopicSettings,
    start: StartWorker,
    proxy: FaultProxy,
    *,
    fault_seconds: float = 6.0,
    per_fault: int = 4,
    within: float = 90.0,
) -> Figures:
    """The model server slowed past the worker's timeout, then answering 503, then garbage, then
    dropping connections; each for ``fault_seconds`` with ``per_fault`` new listings, then
    healthy again until a verdict is scored by the model."""
    began = time.monotonic()
    figures = Figures("model server slow / 5xx / garbage / dropped")
    proxy.set("pass")
    env = {**FAST_WORKER_ENV, **MODEL_FAULT_ENV, **topic_env(topics)}
    # Every model request through the proxy, whichever server the packs' scorer asks.
    worker = start(
        **env, STREAMPROC_INFERENCE__BASE_URL=proxy.base_url, STREAMPROC_EMBEDDING__BASE_URL=proxy.base_url
    )
    windows: list[tuple[str, datetime, datetime]] = []
    expected: set[str] = set()
    with Collector(bootstrap, topics) as collector:
        warm = [listing("L-warm")]
        asyncio.run(publish(bootstrap, topics.listings, listing_records(warm)))
        expected.add("L-warm")
        collector.wait_for_ids({"L-warm"}, within)
        for state in MODEL_FAULTS:
            fault = state.fault
            proxy.set(fault, latency=state.latency, status=state.status)
            began_fault = datetime.now(UTC)
            items = [listing(f"L-{fault}-{i}") for i in range(per_fault)]
            expected |= {str(x["listing_id"]) for x in items}
            asyncio.run(publish(bootstrap, topics.listings, listing_records(items)))
            time.sleep(fault_seconds)
            proxy.set("pass")
            ended = datetime.now(UTC)
            windows.append((fault, began_fault, ended))
            # Something new to score: items of a fault that ended in review have nothing left.
            probe = [listing(f"L-after-{fault}")]
            expected.add(f"L-after-{fault}")
            asyncio.run(publish(bootstrap, topics.listings, listing_records(probe)))
            if poll(partial(_scored_since, collector, ended), within):
                first = min(v.produced_at for v in collector.verdicts if v.usage and v.produced_at >= ended)
                figures.recovery_seconds.append((first - ended).total_seconds())
            # Each fault starts from a quiet worker: items held by this one are decided first.
            collector.wait_for_ids(expected, within)
        collector.wait_for_ids(expected, within)
        settle(worker)
        verdicts = list(collector.verdicts)
    for v in verdicts:
        for name, since, until in windows:
            if since <= v.produced_at < until:
                # A request already on its way when the fault began (or a slow one answered
                # in time) is a real model answer: its approve is the model's, not an error's.
                scored = " (model answer)" if v.usage and v.scores else ""
                key = f"{name}: {v.decision}{scored}"
                figures.fault_decisions[key] = figures.fault_decisions.get(key, 0) + 1
    figures.wall_seconds = time.monotonic() - began
    return tally(figures, verdicts, expected)


def broker_restart(
    start: StartWorker, log_dir: Path, *, down_seconds: float = 3.0, observe: float = 45.0
) -> Figures:
    """Restart a broker of its own under a running worker, down for ``down_seconds``. Tansu
    keeps everything in memory: topics, records and committed offsets are gone afterwards, so
    the topics are applied again at once (as a deployment's topics job would) and new items
    published; then see what the worker does within ``observe`` seconds."""
    began = time.monotonic()
    figures = Figures("broker restart (memory storage)")
    first = Broker(log_dir / f"broker-restart-{uuid.uuid4().hex[:6]}.log")
    first.start()
    second: Broker | None = None
    worker: WorkerLike | None = None
    try:
        topics = create_topics(first.bootstrap)
        env = {**FAST_WORKER_ENV, **topic_env(topics), "STREAMPROC_KAFKA__BOOTSTRAP_SERVERS": first.bootstrap}
        worker = start(**env)
        before = [listing(f"L-b{i}", banned=i % 5 != 0) for i in range(20)]
        verdicts, ok = _decide(first.bootstrap, topics, before, within=90, worker=worker)
        figures.inputs = len(before)
        figures.without_verdict = 0 if ok else len(before)
        log_mark = _log_size(worker.process)
        first.stop()
        time.sleep(down_seconds)
        second = Broker(log_dir / f"broker-restarted-{uuid.uuid4().hex[:6]}.log", port=first.port)
        second.start()
        back = time.monotonic()
        create_topics(second.bootstrap, topics.listings.rsplit(".", 1)[1])
        # More per partition than before the restart: a worker that kept its old fetch positions
        # on the emptied topics would skip the first records of each partition.
        after = [listing(f"L-a{i}", banned=True) for i in range(240)]
        figures.inputs += len(after)
        more, ok = _decide(second.bootstrap, topics, after, within=observe, worker=worker)
        verdicts += more
        figures.error_approvals = sum(1 for v in verdicts if error_approval(v))
        figures.outcome = _restart_outcome(worker.process, ok, log_mark)
        if ok:
            figures.recovery_seconds.append(time.monotonic() - back)
        else:
            figures.without_verdict += len(after)
    finally:
        if worker is not None:
            worker.process.stop()
        for broker in (second, first):
            if broker is not None:
                broker.stop()
    figures.wall_seconds = time.monotonic() - began
    return figures


def _decide(
    bootstrap: str, topics: TopicSettings, items: list[dict[str, Any]], within: float, worker: WorkerLike
) -> tuple[list[Verdict], bool]:
    """Publish ``items``; wait until each has a verdict, or the worker exits."""
    ids = {str(x["listing_id"]) for x in items}
    with Collector(bootstrap, topics) as collector:
        asyncio.run(publish(bootstrap, topics.listings, listing_records(items)))
        poll(lambda: ids <= collector.decided_ids() or not worker.process.alive(), within)
        return list(collector.verdicts), ids <= collector.decided_ids()


def _log_size(process: ManagedProcess) -> int:
    try:
        return process.log_path.stat().st_size
    except FileNotFoundError:
        return 0


def _restart_outcome(process: ManagedProcess, decided: bool, log_mark: int) -> str:
    """What the worker did, and what it logged from ``log_mark`` on (where the broker went
    away, or 0: since it started)."""
    with process.log_path.open("rb") as log:
        log.seek(log_mark)
        lines = log.read().decode("utf-8", "replace").splitlines()
    loud = [line for line in lines if any(w in line for w in ("WARNING", "ERROR", "CRITICAL"))]
    logged = f"{len(loud)} warning/error lines" + (f", first: {loud[0][:160]}" if loud else "")
    if decided:
        return f"reconnected and decided new items ({logged})"
    if not process.alive():
        last = next((line for line in reversed(lines) if line.strip()), "(nothing logged)")
        return f"exited with status {_status(process)}: {last[:200]}"
    return f"kept running without deciding ({logged})"


def _decided_at_least(worker: WorkerLike, count: int) -> bool:
    return metric_total(worker.metrics_port, "streamproc_verdicts_total") >= count


def _scored_since(collector: Collector, since: datetime) -> bool:
    return any(v.usage is not None and v.produced_at >= since for v in collector.verdicts)


def _sigkill(process: ManagedProcess) -> float:
    """SIGKILL the process, wait for it; returns when it was killed (monotonic)."""
    if process.process is None:
        raise RuntimeError(f"{process.name} was never started")
    process.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    process.process.wait(10)
    return killed


def _status(process: ManagedProcess) -> int | None:
    return None if process.process is None else process.process.returncode
