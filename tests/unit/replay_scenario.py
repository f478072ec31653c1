"""In-memory topics, a scoring model and a day of traffic for the replay's unit tests.

``MemoryTopics`` answers ``ranges`` as a broker's time index would and reads its records;
``MarkedModel`` answers the label scorer with P(spam) written into the item's title
(``spam-score 0.73``), so each item's score is chosen by the test. ``scenario`` publishes
listings every 10 minutes from T0, alternating over two partitions, and the live verdicts;
``request`` replays minutes 20 to 100.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from streamproc.config import TopicSettings
from streamproc.decision import decide_verdict
from streamproc.evaluation.replay import ReplayReport, ReplayRequest, finish_replay, plan_replay, run_replay
from streamproc.inference.protocol import ModelAnswer, ModelRequest, TokenChoice
from streamproc.policy import Category, Policy, Rule, Thresholds
from streamproc.policy.rules import CompiledRules
from streamproc.schemas import SourceRef, Verdict, decode_event, encode
from streamproc.stream.time_range import PartitionRange, TimedRecord
from tests.factories import listing_dict, video_dict

T0 = datetime(2024, 5, 1, tzinfo=UTC)
TOPICS = TopicSettings()
_MARK = re.compile(r"spam-score (0\.\d+)")


def _category(id_: str, label: str, review: float, reject: float) -> Category:
    return Category(
        id=id_,
        label=label,
        title=id_.title(),
        description=f"{id_} content.",
        reason_code=id_.upper(),
        seller_message=f"{id_} is not allowed.",
        thresholds=Thresholds(reject=reject, review=review),
    )


#: The live pack: spam reviewed from 0.5, rejected from 0.8; a pre-rule and a post-rule.
LIVE = Policy(
    name="replay-test",
    content_type="listing",
    preamble="Moderate the listing.",
    categories=(_category("spam", "A", 0.5, 0.8), _category("adult", "B", 0.5, 0.9)),
    lists=(("blocked_terms", ("forbidden",)),),
    rules=(
        Rule(
            id="blocked",
            stage="pre",
            when="'blocked_terms' in text_lists",
            decision="reject",
            reason_code="BLOCKED",
        ),
        Rule(
            id="promo-check",
            stage="post",
            when="decision == 'approve' and title =~~ 'promo'",
            decision="review",
            reason_code="PROMO",
            category="spam",
        ),
    ),
)
#: LIVE as a pack file says it (the same version).
LIVE_YAML = """\
name: replay-test
content_type: listing
preamble: Moderate the listing.
scorer: label_logprob
categories:
  - {id: spam, label: A, title: Spam, description: spam content., reason_code: SPAM,
     seller_message: spam is not allowed., thresholds: {review: 0.5, reject: 0.8}}
  - {id: adult, label: B, title: Adult, description: adult content., reason_code: ADULT,
     seller_message: adult is not allowed., thresholds: {review: 0.5, reject: 0.9}}
lists:
  blocked_terms: [forbidden]
rules:
  - {id: blocked, stage: pre, when: "'blocked_terms' in text_lists", decision: reject, reason_code: BLOCKED}
  - id: promo-check
    stage: post
    when: "decision == 'approve' and title =~~ 'promo'"
    decision: review
    reason_code: PROMO
    category: spam
"""
#: The candidate: spam reviewed from 0.4.
CANDIDATE = LIVE.with_thresholds({"spam": Thresholds(reject=0.8, review=0.4)})


def at(minutes: float) -> int:
    return int((T0 + timedelta(minutes=minutes)).timestamp() * 1000)


class MarkedModel:
    """P(spam) from the request's ``spam-score`` mark (0.05 without one); counts its calls and
    raises ``RuntimeError`` on call number ``fail_at`` (a crash mid-replay)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls, self.fail_at = 0, fail_at
        self.titles: list[str] = []

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("crash")
        body = json.dumps(request.body)
        mark = _MARK.search(body)
        score = float(mark.group(1)) if mark else 0.05
        alternatives = (("A", math.log(score)), ("N", math.log(1 - score)))
        return ModelAnswer(
            text="A",
            tokens=(TokenChoice("A", alternatives[0][1], alternatives),),
            prompt_tokens=20,
            completion_tokens=1,
        )


class MemoryTopics:
    """Topics as lists of partitions of records; offsets start at each partition's log start."""

    def __init__(self) -> None:
        self.partitions: dict[str, list[list[TimedRecord]]] = {}
        self.log_starts: dict[tuple[str, int], int] = {}
        self.reads: list[TimedRecord] = []

    def add(self, topic: str, partition: int, value: bytes, timestamp_ms: int) -> TimedRecord:
        partitions = self.partitions.setdefault(topic, [])
        while len(partitions) <= partition:
            partitions.append([])
        offset = self.log_starts.get((topic, partition), 0) + len(partitions[partition])
        record = TimedRecord(topic, partition, offset, timestamp_ms, None, value)
        partitions[partition].append(record)
        return record

    async def ranges(self, topics: Sequence[str], from_ms: int, to_ms: int) -> list[PartitionRange]:
        found = []
        for topic in topics:
            for partition, records in enumerate(self.partitions[topic]):
                log_start = self.log_starts.get((topic, partition), 0)
                end = log_start + len(records)
                start = next((r.offset for r in records if r.timestamp_ms >= from_ms), end)
                stop = next((r.offset for r in records if r.timestamp_ms >= to_ms), end)
                earliest = records[0].timestamp_ms if records and 0 < log_start == start else None
                found.append(PartitionRange(topic, partition, start, max(stop, start), log_start, earliest))
        return found

    async def read(
        self, ranges: Sequence[PartitionRange], positions: Mapping[tuple[str, int], int]
    ) -> AsyncIterator[TimedRecord]:
        for r in ranges:
            position = max(positions.get((r.topic, r.partition), r.start), r.start)
            for record in self.partitions[r.topic][r.partition]:
                if position <= record.offset < r.end:
                    self.reads.append(record)
                    yield record


def listing_value(listing_id: str, title: str, revision: int = 0) -> bytes:
    return orjson.dumps(listing_dict(listing_id=listing_id, title=title, revision=revision))


async def live_verdict(value: bytes, record: TimedRecord, policy: Policy = LIVE) -> Verdict:
    """The verdict a worker running ``policy`` publishes for the record."""
    verdict, _ = await decide_verdict(
        policy,
        CompiledRules.compile(policy),
        decode_event("listing", value),
        MarkedModel(),
        model_name="m",
        source=SourceRef(topic=record.topic, partition=record.partition, offset=record.offset),
        received=0.0,
        clock=lambda: T0,
    )
    return verdict


def publish_verdict(topics: MemoryTopics, verdict: Verdict, timestamp_ms: int) -> None:
    topics.add(TOPICS.verdicts, 0, encode(verdict), timestamp_ms)


#: minute → (listing id, title, partition); minutes 0, 10, 100 and 110 are outside the range.
TRAFFIC = {
    0: ("L-0", "spam-score 0.45 mug"),
    10: ("L-1", "spam-score 0.45 mug"),
    20: ("L-2", "spam-score 0.45 mug"),  # live approve, candidate review: the one change
    30: ("L-3", "spam-score 0.3 mug"),  # approve on both sides
    40: ("L-4", "forbidden replica"),  # the pre-rule rejects it: no model call
    50: ("L-5", "spam-score 0.6 mug"),  # review on both sides
    55: ("L-5", "spam-score 0.6 mug"),  # the same revision again: a duplicate
    60: ("L-6", "spam-score 0.42 promo mug"),  # live: the post-rule's review; candidate: spam's
    70: ("L-7", "spam-score 0.41 mug"),  # only a shadow verdict: no live verdict
    90: ("L-9", "spam-score 0.85 mug"),  # reject; an older pack's review before it
    100: ("L-10", "spam-score 0.45 mug"),
    110: ("L-11", "spam-score 0.45 mug"),
}
BAD_MINUTE = 80


async def scenario() -> MemoryTopics:
    topics = MemoryTopics()
    records: dict[str, tuple[bytes, TimedRecord]] = {}
    for minute, (listing_id, title) in sorted(TRAFFIC.items()):
        if minute > BAD_MINUTE and not records.get("bad"):
            records["bad"] = (b"", topics.add(TOPICS.listings, 0, b"not json", at(BAD_MINUTE)))
        value = listing_value(listing_id, title)
        records[listing_id] = (value, topics.add(TOPICS.listings, (minute // 10) % 2, value, at(minute)))
    older = LIVE.with_thresholds({"spam": Thresholds(reject=0.9, review=0.5)})
    publish_verdict(topics, await live_verdict(*records["L-9"], older), at(91))
    for listing_id in ("L-2", "L-3", "L-4", "L-5", "L-6", "L-9"):
        minute = next(m for m, (i, _) in TRAFFIC.items() if i == listing_id)
        publish_verdict(topics, await live_verdict(*records[listing_id]), at(minute + 1))
    shadow = await live_verdict(*records["L-7"])
    publish_verdict(topics, shadow.model_copy(update={"mode": "shadow", "kind": "shadow"}), at(71))
    # Outside the verdict window (to + 1 h): a later decision must not count.
    late = await live_verdict(
        *records["L-2"], LIVE.with_thresholds({"spam": Thresholds(reject=0.4, review=0.3)})
    )
    publish_verdict(topics, late, at(300))
    return topics


#: Listing id → true categories. L-3 has no label; L-7 has no live verdict; L-99 was not
#: replayed; the video's label is of another content type than the packs'.
LABELS = {
    "L-2": ["spam"],
    "L-4": ["spam"],
    "L-5": [],
    "L-6": ["spam"],
    "L-7": ["spam"],
    "L-9": ["spam"],
    "L-99": [],
}


def write_labels(path: Path, labels: Mapping[str, list[str]] = LABELS) -> Path:
    """``labels`` as a labeled dataset, as ``streamproc export-labels`` writes it."""
    lines = [
        {"content_type": "listing", "event": listing_dict(listing_id=i, title="mug"), "true_categories": c}
        for i, c in labels.items()
    ]
    lines.append({"content_type": "video", "event": video_dict(), "true_categories": ["violence"]})
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def request(out: Path, *policies: Policy) -> ReplayRequest:
    return ReplayRequest(
        policy_files=tuple(Path(f"{p.name}.yaml") for p in policies or (CANDIDATE,)),
        from_time=T0 + timedelta(minutes=20),
        to_time=T0 + timedelta(minutes=100),
        verdict_margin=timedelta(hours=1),
        out=out,
        topics=TOPICS,
    )


async def replay_all(
    topics: MemoryTopics,
    out: Path,
    model: MarkedModel | None = None,
    policy: Policy = CANDIDATE,
    pack_file: Path | None = None,
    **finish: Any,
) -> ReplayReport:
    """Plan, replay and report in ``out``, with ``policy`` (read from ``pack_file``) as the candidate."""
    asked = request(out, policy)
    if pack_file is not None:
        asked = dataclasses.replace(asked, policy_files=(pack_file,))
    plan = await plan_replay(asked, [policy], topics)
    await run_replay(plan, [policy], topics, model or MarkedModel(), out, concurrency=2)
    return await finish_replay(plan, [policy], topics, out, **finish)
