"""Megabyte records through a real worker on the real broker: what they cost it.

100 records, each with about 1 MB (or the schema's bound) in one text field, U+FDFA (18
characters after NFKC) or plain text, through one ``streamproc worker`` process. Each gets
one outcome (a dead letter over the bound, a verdict at it, never an approve from an error);
the worker's resident memory ends within 100 MB of its warmed-up baseline; its CPU time
(an upper bound on its event-loop time) averages under 20 ordinary records' a record, over the
bound and at it, the ordinary ones measured by the same worker just before (a ratio, as CPU
seconds measure the machine too; tests/unit/test_record_cost.py bounds each record alone);
and no model request reaches 10 MB. Before the input bounds, one such record in
``category_path`` became a 72 MB model request and four added 577 MB of RSS.

The model server is a stand-in that records request sizes and answers at once: what is
measured is the worker's path from the broker to the model request, not a model.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import pytest

from load.fault_scenarios import FAST_WORKER_ENV, Collector, error_approval, listing, publish
from load.stack import ROOT, start_worker
from streamproc.config import TopicSettings
from streamproc.dev.devstack import Broker, ManagedProcess
from streamproc.schemas import DeadLetter, Verdict
from tests.factories import video_dict
from tests.integration.conftest import LOGS
from tests.integration.model_stub import RecordingModelServer, recording_model_server
from tests.large_records import FIELDS, LargeRecord, large_records

pytestmark = pytest.mark.integration

RECORDS = 100
MAX_RSS_GROWTH = 100 * 2**20
MAX_REQUEST_BYTES = 10 * 2**20
#: CPU a large record, in ordinary records' CPU: a ratio, as CPU seconds measure the machine too.
MAX_ORDINARY_RECORDS = 20
ORDINARY = 24  # records a batch, to warm up and then to measure


@dataclass(frozen=True)
class Usage:
    rss_bytes: int
    cpu_seconds: float


def usage(process: ManagedProcess) -> Usage:
    """The process's resident memory and CPU time (user and system), from /proc."""
    assert process.process is not None
    pid = process.process.pid
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # fields after the command name, which is in parentheses and may hold spaces
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return Usage(rss_kib * 1024, ticks / os.sysconf("SC_CLK_TCK"))


def _publish(bootstrap: str, topics: TopicSettings, records: Sequence[LargeRecord]) -> None:
    for content_type, topic in (("listing", topics.listings), ("video", topics.videos)):
        chosen = [(r.content_id.encode(), r.value) for r in records if r.content_type == content_type]
        asyncio.run(publish(bootstrap, topic, chosen))


def _ordinary(bootstrap: str, topics: TopicSettings, seen: Collector, batch: str) -> None:
    """Ordinary listings and videos until the worker has decided them all."""
    listings = [listing(f"{batch}-L-{n}") for n in range(ORDINARY // 2)]
    videos = [video_dict(video_id=f"{batch}-V-{n}") for n in range(ORDINARY // 2)]
    for topic, events, key in (
        (topics.listings, listings, "listing_id"),
        (topics.videos, videos, "video_id"),
    ):
        asyncio.run(publish(bootstrap, topic, [(x[key].encode(), orjson.dumps(x)) for x in events]))
    ids = {x["listing_id"] for x in listings} | {x["video_id"] for x in videos}
    if not seen.wait_for_ids(ids, within=120):
        pytest.fail(f"ordinary items without an outcome: {sorted(ids - seen.decided_ids())}", pytrace=False)


@dataclass(frozen=True)
class Run:
    warm: Usage  # after a batch of ordinary records
    baseline: Usage  # after another
    rejected: Usage  # after the records over the bound
    after: Usage  # after the records at the bound too
    largest_request: int
    requests: int


def _decide(bootstrap: str, topics: TopicSettings, records: Sequence[LargeRecord], seen: Collector) -> None:
    _publish(bootstrap, topics, records)
    ids = {r.content_id for r in records}
    if not seen.wait_for_ids(ids, within=300):
        pytest.fail(f"records without an outcome: {sorted(ids - seen.decided_ids())}", pytrace=False)


def _run(
    broker: Broker,
    topics: TopicSettings,
    records: Sequence[LargeRecord],
    stub: RecordingModelServer,
    seen: Collector,
) -> Run:
    process, _ = start_worker(
        LOGS / f"hostile-memory-{uuid.uuid4().hex[:6]}",
        broker.bootstrap,
        topics,
        stub.base_url,
        ROOT / "policies",
        **FAST_WORKER_ENV,
        STREAMPROC_EMBEDDING__BASE_URL=stub.base_url,
        STREAMPROC_WORKER__PROCESSES="1",
    )
    try:
        _ordinary(broker.bootstrap, topics, seen, "warm")
        warm = usage(process)
        _ordinary(broker.bootstrap, topics, seen, "measured")
        baseline, warm_requests = usage(process), len(stub.requests)
        _decide(broker.bootstrap, topics, [r for r in records if r.oversize], seen)
        rejected = usage(process)
        _decide(broker.bootstrap, topics, [r for r in records if not r.oversize], seen)
        after = usage(process)
    finally:
        process.stop()
    return Run(warm, baseline, rejected, after, stub.largest_body, len(stub.requests) - warm_requests)


def _check_outcomes(
    records: Sequence[LargeRecord], verdicts: list[Verdict], letters: list[DeadLetter]
) -> None:
    """One outcome per record: a bounded dead letter over the bound, a model-scored verdict at
    it; no verdict from an error."""
    outcomes = Counter([v.content_id for v in verdicts] + [d.key or "" for d in letters])
    assert {r.content_id: outcomes[r.content_id] for r in records} == {r.content_id: 1 for r in records}
    oversize = {r.content_id: r.value for r in records if r.oversize}
    assert {d.key for d in letters} == set(oversize)  # rejected at decode
    for letter in letters:
        whole = oversize[letter.key or ""]
        assert (letter.reason, letter.payload_truncated, letter.payload_bytes) == (
            "schema_validation",
            True,
            len(whole),
        )
        assert letter.payload_sha256 == hashlib.sha256(whole).hexdigest()
        assert len(letter.payload) < 32 * 1024
    at_bound = {r.content_id for r in records if not r.oversize}
    scored = [v for v in verdicts if v.content_id in at_bound]
    assert all(v.usage is not None for v in scored)  # each went through the prompt path to the model
    assert [v.content_id for v in verdicts if v.decided_by.kind == "error" or error_approval(v)] == []


def test_megabyte_records_in_any_field_cost_bounded_memory_cpu_and_model_requests(
    broker: Broker, topics: TopicSettings
) -> None:
    records = large_records(RECORDS)
    assert {r.field for r in records} == set(FIELDS)
    with recording_model_server() as stub, Collector(broker.bootstrap, topics) as seen:
        run = _run(broker, topics, records, stub, seen)
    _check_outcomes(records, list(seen.verdicts), list(seen.dead_letters))

    growth = run.after.rss_bytes - run.baseline.rss_bytes
    oversize = sum(r.oversize for r in records)
    cpu_rejected = (run.rejected.cpu_seconds - run.baseline.cpu_seconds) / oversize
    cpu_at_bound = (run.after.cpu_seconds - run.rejected.cpu_seconds) / (len(records) - oversize)
    cpu_ordinary = (run.baseline.cpu_seconds - run.warm.cpu_seconds) / ORDINARY
    print(
        f"RSS {run.baseline.rss_bytes / 2**20:.0f} -> {run.after.rss_bytes / 2**20:.0f} MiB "
        f"(growth {growth / 2**20:.1f} MiB); CPU a record: {cpu_ordinary * 1000:.1f} ms ordinary, "
        f"{cpu_rejected * 1000:.1f} ms over the bound, {cpu_at_bound * 1000:.1f} ms at it; "
        f"{run.requests} model requests, largest body "
        f"{run.largest_request / 2**10:.0f} KiB"
    )
    assert run.largest_request < MAX_REQUEST_BYTES
    assert growth < MAX_RSS_GROWTH
    assert max(cpu_rejected, cpu_at_bound) < MAX_ORDINARY_RECORDS * cpu_ordinary
