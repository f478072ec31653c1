"""Hostile input against a running stack: poison records amid ordinary items, one worker.

The records of the integration tests (tests/integration/test_poison_records.py and
test_hostile_memory.py): 180 KB of byte 0x01, whose dead letter once escaped every byte
sixfold, went over the broker's 1 MiB request limit, was retried for ever and stalled its
partition; records with about 1 MB of U+FDFA or of plain text in one text field (over that
field's bound: a dead letter at decode); and records with each field at its schema bound
(decoded, and scored by the model). Each hostile record is followed on its partition by an
ordinary item under the same record key, so that item's verdict shows the partition moved on.

At the bound, plain text by default: U+FDFA there (18 characters after NFKC) makes windows of
about 2,000 tokens, 57,000 prompt tokens for the eight fields, minutes of work for a model
server on two CPU cores; test_hostile_memory.py sends them through a stand-in instead.

Figures per run (``PoisonFigures``): inputs; dead letters written, and the records over a
bound without exactly one (must be 0); inputs without a verdict or dead letter (must be 0);
approvals produced by errors (must be 0); seconds from publishing until every follower has
its verdict; partitions the group did not commit to their end; the worker's RSS growth over
its warmed-up baseline; the largest dead letter in bytes.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from load.fault_scenarios import (
    FAST_WORKER_ENV,
    Collector,
    Figures,
    StartWorker,
    WorkerLike,
    listing,
    poll,
    publish,
    tally,
    topic_env,
)
from streamproc.config import TopicSettings
from streamproc.schemas import DeadLetter
from tests.factories import video_dict
from tests.large_records import FIELDS, Field, large_record

__all__ = [
    "POISON",
    "POISON_WORKER_ENV",
    "PoisonFigures",
    "Published",
    "hostile_batch",
    "poison_notes",
    "poison_records",
    "rss_mib",
    "warm_up_batch",
]

#: The record that stalled its partition: its dead letter escaped every byte six times.
POISON = b"\x01" * (180 * 1024)
POISON_KEY = "P-0x01"
WARM_UP = 20
#: The at-bound items' windows reach a CPU model server at once and it answers the last of them
#: after about a minute: at the shipped 30 s some time out, and their retries and the circuit
#: breaker's pauses about double the time the partition takes to move on.
POISON_WORKER_ENV = {"STREAMPROC_INFERENCE__TIMEOUT_SECONDS": "120"}
Topic = Literal["listings", "videos"]
Kind = Literal["ligature", "plain"]


@dataclass(frozen=True)
class Published:
    """One record of the batch: the topic (a ``TopicSettings`` field), its key and value, and
    the id its outcome carries (a dead letter's key, a verdict's content id)."""

    topic: Topic
    key: str
    value: bytes
    outcome_id: str
    dead_letter: bool = False  # expected to become one dead letter
    follower: bool = False  # ordinary, right behind a hostile record under its key


@dataclass
class PoisonFigures(Figures):
    at_bound: int = 0  # hostile records within every bound: each should get a verdict
    dead_letters: int = 0
    expected_dead_letters: int = 0
    not_once: int = 0  # records expected to be dead-lettered without exactly one letter
    letter_reasons: dict[str, int] = field(default_factory=dict)
    partitions_behind: int = 0  # input partitions the group did not commit to their end
    rss_growth_mib: float = 0.0  # at the end, over the warmed-up baseline
    rss_peak_growth_mib: float = 0.0  # the largest sample while the batch was worked through
    largest_dead_letter_bytes: int = 0


def _ordinary(topic: Topic, content_id: str) -> bytes:
    if topic == "videos":
        return orjson.dumps(video_dict(video_id=content_id))
    return orjson.dumps(listing(content_id))


def hostile_batch(at_bound: Sequence[Kind] = ("plain",)) -> list[Published]:
    """The poison record, 1 MB of U+FDFA and of plain text in each field, and each field at its
    bound in each of ``at_bound`` (tests/large_records.py), each after an ordinary item of its
    own and before a follower under its record key."""
    over: tuple[Kind, ...] = ("ligature", "plain")
    kinds: list[tuple[Field, Kind, bool]] = [(f, k, True) for f in FIELDS for k in over]
    kinds += [(f, k, False) for f in FIELDS for k in at_bound]
    hostile = [Published("listings", POISON_KEY, POISON, POISON_KEY, dead_letter=True)]
    for n, (name, kind, oversize) in enumerate(kinds, 1):
        large = large_record(n, name, kind, oversize=oversize)
        topic: Topic = "videos" if large.content_type == "video" else "listings"
        hostile.append(Published(topic, large.content_id, large.value, large.content_id, oversize))
    batch: list[Published] = []
    for n, record in enumerate(hostile):
        before, after = f"{record.topic[0].upper()}-o{n}", f"{record.topic[0].upper()}-f{n}"
        batch += [
            Published(record.topic, before, _ordinary(record.topic, before), before),
            record,
            Published(record.topic, record.key, _ordinary(record.topic, after), after, follower=True),
        ]
    return batch


def warm_up_batch(count: int = WARM_UP) -> list[Published]:
    """Ordinary listings and videos, half each."""
    batch: list[Published] = []
    for n in range(count):
        topic: Topic = "listings" if n % 2 else "videos"
        batch.append(Published(topic, f"W-{n}", _ordinary(topic, f"W-{n}"), f"W-{n}"))
    return batch


def _publish(bootstrap: str, topics: TopicSettings, batch: Sequence[Published]) -> None:
    for topic in ("listings", "videos"):
        chosen = [(p.key.encode(), p.value) for p in batch if p.topic == topic]
        asyncio.run(publish(bootstrap, getattr(topics, topic), chosen))


def rss_mib(pid: int) -> float:
    """A process's resident memory (VmRSS) in MiB; 0 when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else 0.0


def poison_records(
    bootstrap: str,
    topics: TopicSettings,
    start: StartWorker,
    *,
    at_bound: Sequence[Kind] = ("plain",),
    within: float = 240.0,
    **env: str,
) -> PoisonFigures:
    """Warm a worker up on ordinary items, then publish :func:`hostile_batch` and measure;
    ``env`` overrides the worker's settings."""
    began = time.monotonic()
    batch = hostile_batch(at_bound)
    over = sum(p.dead_letter for p in batch)
    figures = PoisonFigures(
        f"poison records: 180 KB of 0x01, {over - 1} of 1 MB, {len(batch) // 3 - over} at a bound",
        at_bound=len(batch) // 3 - over,
    )
    group = f"poison-{uuid.uuid4().hex[:8]}"
    settings = {**FAST_WORKER_ENV, **topic_env(topics), "STREAMPROC_KAFKA__GROUP_ID": group}
    worker = start(**settings, STREAMPROC_WORKER__PROCESSES="1", **{**POISON_WORKER_ENV, **env})
    pid = worker.process.process.pid if worker.process.process else 0
    warm = warm_up_batch()
    with Collector(bootstrap, topics) as collector:
        _publish(bootstrap, topics, warm)
        collector.wait_for_ids({w.outcome_id for w in warm}, within)
        baseline = peak = rss_mib(pid)
        _publish(bootstrap, topics, batch)
        published = time.monotonic()
        followers = {p.outcome_id for p in batch if p.follower}

        def followed() -> bool:
            nonlocal peak
            peak = max(peak, rss_mib(pid))
            return followers <= collector.decided_ids()

        if poll(followed, within):
            figures.recovery_seconds.append(time.monotonic() - published)
        collector.wait_for_ids({p.outcome_id for p in batch}, within)
        inputs = [topics.listings, topics.videos]
        figures.partitions_behind = _wait_committed(bootstrap, group, inputs, worker)
        figures.rss_growth_mib = rss_mib(pid) - baseline
        figures.rss_peak_growth_mib = max(peak, rss_mib(pid)) - baseline
        verdicts, letters = list(collector.verdicts), list(collector.dead_letters)
    figures.largest_dead_letter_bytes = max(asyncio.run(_message_sizes(bootstrap, topics.dlq)), default=0)
    _count_letters(figures, batch, letters)
    figures.wall_seconds = time.monotonic() - began
    expected = {p.outcome_id for p in [*warm, *batch]}
    decided = {v.content_id for v in verdicts} | {d.key or "" for d in letters}
    tally(figures, verdicts, expected)
    figures.without_verdict = len(expected - decided)  # a dead letter is an outcome too
    return figures


def _count_letters(figures: PoisonFigures, batch: Sequence[Published], letters: Sequence[DeadLetter]) -> None:
    per_key = Counter(d.key or "" for d in letters)
    should = [p.outcome_id for p in batch if p.dead_letter]
    figures.dead_letters = len(letters)
    figures.expected_dead_letters = len(should)
    figures.not_once = sum(1 for key in should if per_key[key] != 1)
    figures.letter_reasons = dict(sorted(Counter(d.reason for d in letters).items()))


def _wait_committed(bootstrap: str, group: str, topics: list[str], worker: WorkerLike) -> int:
    """Input partitions the group has not committed to their end, after waiting up to 30 s."""
    deadline = time.monotonic() + 30
    while (behind := asyncio.run(_partitions_behind(bootstrap, group, topics))) and worker.process.alive():
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return behind


async def _partitions_behind(bootstrap: str, group: str, topics: list[str]) -> int:
    # A consumer of the group that does not subscribe reads its commits without joining it.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await _partitions(consumer, topics)
        ends = await consumer.end_offsets(tps)
        committed = [await consumer.committed(tp) or 0 for tp in tps]
        return sum(1 for tp, position in zip(tps, committed, strict=True) if position < ends[tp])
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topics: list[str]) -> list[TopicPartition]:
    await consumer.topics()  # fetches the cluster's metadata
    return [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]


async def _message_sizes(bootstrap: str, topic: str) -> list[int]:
    """The size in bytes of every record value on ``topic``, read from the start to its end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    sizes: list[int] = []
    try:
        tps = await _partitions(consumer, [topic])
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        async with asyncio.timeout(60):
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    sizes += [len(m.value or b"") for m in messages]
    finally:
        await consumer.stop()
    return sizes


def poison_notes(runs: Sequence[Figures]) -> list[str]:
    """The figures block's lines on the poison records scenario: a table, one row per run, and
    what it shows. Empty without runs."""
    poisoned = [f for f in runs if isinstance(f, PoisonFigures)]
    if not poisoned:
        return []
    lines = [
        "",
        f"Poison records, one worker: warmed up on {WARM_UP} ordinary items, then "
        f"{poisoned[0].expected_dead_letters} records over a bound (the 180 KB of 0x01, and 1 MB of "
        f"U+FDFA or of plain text in each text field) and {poisoned[0].at_bound} with a field at "
        "its bound (plain text, scored by the model), each between an ordinary item and a follower "
        "under its record key. Recovery in the table above is from publishing until every "
        "follower has its verdict (the partition moved on); it is mostly the model server's work "
        "on the at-bound items, for which the worker's request timeout is "
        f"{POISON_WORKER_ENV['STREAMPROC_INFERENCE__TIMEOUT_SECONDS']} s here (shipped: 30 s; on "
        "two CPU cores their requests, sent at once, are answered after about a minute). Dead "
        f"letters by reason, per run: {_reasons(poisoned)}.",
        "",
        "| run | dead letters (expected) | not dead-lettered exactly once | partitions not committed "
        "to the end | partition moved on s | worker RSS growth MiB (peak / end) "
        "| largest dead letter bytes |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {n} | {f.dead_letters} ({f.expected_dead_letters}) | {f.not_once} | {f.partitions_behind} "
        f"| {_seconds(f.recovery_seconds)} | {f.rss_peak_growth_mib:.0f} / {f.rss_growth_mib:.0f} "
        f"| {f.largest_dead_letter_bytes} |"
        for n, f in enumerate(poisoned, 1)
    ]
    return [*lines, "", _reading(poisoned)]


def _reasons(runs: Sequence[PoisonFigures]) -> str:
    total: Counter[str] = Counter()
    for f in runs:
        total.update(f.letter_reasons)
    return ", ".join(f"{reason} {count / len(runs):g}" for reason, count in sorted(total.items())) or "none"


def _seconds(values: Sequence[float]) -> str:
    return f"{values[0]:.1f}" if values else "never"


def _reading(runs: Sequence[PoisonFigures]) -> str:
    """One sentence on what the runs show, from their figures."""
    clean = all(
        f.not_once == 0
        and f.dead_letters == f.expected_dead_letters  # none for a record within every bound
        and f.without_verdict == 0
        and f.error_approvals == 0
        and f.partitions_behind == 0
        for f in runs
    )
    largest = max(f.largest_dead_letter_bytes for f in runs)
    growth = statistics.median(f.rss_growth_mib for f in runs)
    outcome = (
        "every record over a bound became exactly one dead letter, every input had its outcome, "
        "no approval came from an error and the group committed every input partition to its end"
        if clean
        else "NOT every record over a bound became exactly one dead letter with every input "
        "decided and committed (see the table)"
    )
    fits = "under" if largest < 2**20 else "OVER"
    return (
        f"Reading the poison runs: {outcome}; the largest dead letter was {largest:,} bytes, "
        f"{fits} the 1 MiB produce request limit; the worker's RSS ended a median {growth:.0f} MiB "
        "over its warmed-up baseline."
    )
