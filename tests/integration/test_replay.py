"""`streamproc replay` against the real broker and model server.

Listings stamped over eight hours of the past, with the live verdicts a worker running the
shipped listings pack (scored with ``label_logprob``: one short request per item) published
for them; the replay covers the second half with a candidate that lowers one review
threshold. The served model is a weak judge, so the candidate's threshold is chosen from the
live scores and the changed items are recomputed here from those scores and thresholds.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamproc.config import InferenceSettings, TopicSettings
from streamproc.decision import decide_verdict
from streamproc.dev.devstack import Broker, VllmServer
from streamproc.evaluation.replay import Change, ReplayReport, deterministic
from streamproc.evaluation.runner import offline_client
from streamproc.policy import Policy, load_pack
from streamproc.policy.rules import CompiledRules
from streamproc.schemas import SourceRef, Verdict, decode_event
from streamproc.stream import verdict_records
from tests.factories import label_pack, listing_dict
from tests.integration.conftest import SERVED_MODEL

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
T0 = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
HALF = timedelta(hours=4)
#: The second half, replayed: titles the model scores, then two a pre-rule rejects.
SCORED_TITLES = [
    "Vintage leather wallet, brown",
    "BUY NOW!!! 10000 followers cheap, DM me",
    "Diet pills: lose 10 kg in one week, guaranteed",
    "Kids bicycle, 16 inch, red",
    "Earn 5000 EUR a week from home, no experience",
    "Sealed phone, latest model, 50 EUR only",
    "Oak dining table with four chairs",
    "Miracle cream cures acne overnight",
]
BLOCKED_TITLE = "Rolex replica watch, AAA grade"
#: A scored item of the replayed half that no worker decided: it has no live verdict.
UNDECIDED = "L-2-5"


async def _publish(broker: Broker, topics: TopicSettings, live: Policy, vllm: VllmServer) -> list[Verdict]:
    """Every listing at its time; each one's live verdict a minute later (one left out)."""
    events = [(f"L-1-{i}", BLOCKED_TITLE, T0 + i * HALF / 8) for i in range(8)]
    events += [(f"L-2-{i}", title, T0 + HALF + i * HALF / 10) for i, title in enumerate(SCORED_TITLES)]
    events += [(f"L-3-{i}", BLOCKED_TITLE, T0 + HALF + (8 + i) * HALF / 10) for i in range(2)]
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    settings = InferenceSettings(base_url=vllm.base_url, model=SERVED_MODEL, timeout_seconds=120)
    verdicts = []
    await producer.start()
    try:
        async with offline_client(settings, None, (True, False)) as model:
            for listing_id, title, at in events:
                value = orjson.dumps(
                    listing_dict(listing_id=listing_id, title=title, created_at=at.isoformat())
                )
                stamp = int(at.timestamp() * 1000)
                sent = await producer.send_and_wait(
                    topics.listings, value, key=listing_id.encode(), timestamp_ms=stamp
                )
                if listing_id == UNDECIDED:
                    continue
                verdict, _ = await decide_verdict(
                    live, CompiledRules.compile(live), decode_event("listing", value), model,
                    model_name=SERVED_MODEL, source=SourceRef(topic=sent.topic, partition=sent.partition,
                    offset=sent.offset), received=time.perf_counter(), clock=lambda: datetime.now(UTC),
                )  # fmt: skip
                [record] = verdict_records(verdict, topics.verdicts)  # as the worker publishes it
                await producer.send_and_wait(
                    record.topic, record.value, key=record.key, headers=list(record.headers),
                    timestamp_ms=stamp + 60_000,
                )  # fmt: skip
                verdicts.append(verdict)
    finally:
        await producer.stop()
    return verdicts


def _candidate(
    live_file: Path, live: Policy, verdicts: list[Verdict], directory: Path
) -> tuple[Path, str, float]:
    """A copy of the live pack with one category's review threshold lowered into a gap between
    the approved items' scores (between two of them if one is wide enough, so some approvals
    stay), far enough from each score that run-to-run noise cannot move an item across it."""
    gaps: list[tuple[bool, float, str, float]] = []
    for entry in live.categories:
        scores = sorted(v.scores[entry.id] for v in verdicts if v.decision == "approve" and v.scores)
        for low, high in zip([0.0, *scores], scores, strict=False):
            gaps.append((low > 0.0 and high - low > 0.01, high - low, entry.id, (low + high) / 2))
    assert gaps, f"no approved item to change: {verdicts}"
    _, width, category, threshold = max(gaps)
    assert width > 0.01, f"the approved items' scores are too close together: {verdicts}"
    text = live_file.read_text()
    block = re.search(rf"  - id: {category}\n(.*?)(?=\n  - id: |\nlists:)", text, re.DOTALL)
    assert block is not None
    lowered = re.sub(r"review: [0-9.]+\}", f"review: {threshold:.6f}}}", block.group(0))
    directory.mkdir()
    candidate = directory / "candidate.yaml"
    candidate.write_text(
        text.replace(block.group(0), lowered).replace("name: marketplace-listings", "name: candidate")
    )
    return candidate, category, threshold


def _changed_by_hand(candidate: Policy, verdicts: list[Verdict]) -> list[str]:
    """Replayed items whose decision at the candidate's thresholds differs from the live one:
    the most severe category decision, from the live scores (no rule decides these items)."""
    changed = []
    for verdict in verdicts:
        if verdict.decided_by.kind == "rule" or not verdict.scores:
            continue
        severity = 0
        for c in candidate.categories:
            score = verdict.scores[c.id]
            severity = max(
                severity, 2 if score >= c.thresholds.reject else 1 if score >= c.thresholds.review else 0
            )
        if ("approve", "review", "reject")[severity] != verdict.decision:
            changed.append(verdict.content_id)
    return sorted(changed)


async def _end_offsets(broker: Broker, topics: TopicSettings) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    await consumer.start()
    try:
        names = set(topics.model_dump().values())
        cluster = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(t, p) for t in names for p in cluster.partitions_for_topic(t) or ()]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


def _replay_command(
    broker: Broker, vllm: VllmServer, topics: TopicSettings, pack: Path, out: Path
) -> list[str]:
    args = [
        "replay", "--policy", str(pack), "--from", (T0 + HALF).isoformat(),
        "--to", (T0 + 2 * HALF).isoformat(), "--out", str(out), "--bootstrap", broker.bootstrap,
        "--vllm-url", vllm.base_url, "--model-name", SERVED_MODEL, "--concurrency", "1",
        "--verdict-margin", "10m",
    ]  # fmt: skip
    return [sys.executable, "-m", "streamproc", *args]


def _env(topics: TopicSettings) -> dict[str, str]:
    return {**os.environ, **{f"STREAMPROC_TOPICS__{k.upper()}": v for k, v in topics.model_dump().items()}}


def _report(out: Path) -> ReplayReport:
    return ReplayReport.model_validate_json((out / "report.json").read_bytes())


def test_replay_reports_the_candidates_changes_and_resumes_after_a_kill(
    broker: Broker, vllm: VllmServer, topics: TopicSettings, tmp_path: Path
) -> None:
    live_file = label_pack(ROOT / "policies" / "listings.yaml", tmp_path / "live")
    live = load_pack(live_file)
    verdicts = asyncio.run(_publish(broker, topics, live, vllm))
    replayed = [v for v in verdicts if v.content_id.startswith(("L-2-", "L-3-"))]
    pack, category, threshold = _candidate(live_file, live, replayed, tmp_path / "candidate")
    before = asyncio.run(_end_offsets(broker, topics))

    through = tmp_path / "through"
    done = subprocess.run(
        _replay_command(broker, vllm, topics, pack, through), env=_env(topics), capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "items/s" in done.stderr  # progress on stderr
    report = _report(through)
    [result] = report.packs
    assert (result.items, result.with_live_verdict, result.without_live_verdict) == (10, 9, 1)
    assert result.cost.requests == len(SCORED_TITLES)  # the pre-rule's items cost no request
    expected = _changed_by_hand(load_pack(pack), replayed)
    assert expected, f"lowering {category} review to {threshold} changed nothing"
    changes = [
        Change.model_validate_json(line) for line in (through / "changes.jsonl").read_bytes().splitlines()
    ]
    assert sorted(c.content_id for c in changes) == expected
    assert result.changed == len(expected)
    assert all(c.live.decision == "approve" and c.candidate.decision == "review" for c in changes)
    assert all(category in c.candidate.flagged for c in changes)
    assert "**Not retained:**" not in (through / "report.md").read_text()

    # Killed mid-way, then run again with the same arguments: the same final report.
    resumed = tmp_path / "resumed"
    process = subprocess.Popen(
        _replay_command(broker, vllm, topics, pack, resumed), env=_env(topics),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_lines(resumed / "results.jsonl", 2, process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    killed_at = (resumed / "results.jsonl").read_bytes().count(b"\n")
    assert killed_at < result.items and not (resumed / "report.json").exists()
    again = subprocess.run(
        _replay_command(broker, vllm, topics, pack, resumed), env=_env(topics), capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert deterministic(_report(resumed)) == deterministic(report)
    assert (resumed / "changes.jsonl").read_bytes() == (through / "changes.jsonl").read_bytes()
    # Nothing was published (and nothing committed: the reader has no group).
    assert asyncio.run(_end_offsets(broker, topics)) == before


def _wait_for_lines(path: Path, lines: int, process: subprocess.Popen[bytes], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.is_file() and path.read_bytes().count(b"\n") >= lines:
            return
        if process.poll() is not None:
            pytest.fail(
                f"the replay ended (status {process.returncode}) before it could be killed", pytrace=False
            )
        time.sleep(0.02)
    pytest.fail(f"{path} never reached {lines} lines", pytrace=False)
