"""Shadow packs, audit samples and review tickets end to end: real broker, real vLLM server,
`streamproc worker` as its own process with the shipped packs plus candidates on all traffic."""

from __future__ import annotations

import json
import math
import re
import shutil
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from streamproc.config import AuditSettings, TopicSettings
from streamproc.decision.sampling import AuditDraw, audit_probability, drawn
from streamproc.dev.devstack import Broker
from streamproc.policy import PolicySet, load_pack, load_policy_set
from streamproc.schemas import AuditSample, ContentEvent, Verdict, decode_event
from tests.factories import sample_events
from tests.integration.conftest import StartWorker
from tests.integration.kafka_io import Received, consume, publish_content

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
# Everything decided as reject or review is audited; the rest at an even chance (more near
# a threshold), so the audit topic holds a known, deterministic subset.
AUDIT = AuditSettings(base_rate=0.5, decision_rates={"review": 1.0, "reject": 1.0})


def candidates(folder: Path) -> list[Path]:
    """The shipped listings candidate and a video candidate, both on all of their traffic."""
    listing_text = (ROOT / "policies" / "candidates" / "listings-v2.yaml").read_text()
    start = listing_text.index("shadow_sample:")
    end = listing_text.index("\n", start)
    (folder / "listings-v2.yaml").write_text(listing_text[:start] + "shadow_sample: 1.0" + listing_text[end:])
    video_text = (ROOT / "policies" / "videos.yaml").read_text()
    # Stricter: every category at review 0.3, reject 0.6 (hand-set, so without the provenance).
    video_text, lowered = re.subn(
        r"thresholds: \{[^}]*\}",
        "thresholds: {reject: 0.6, review: 0.3}",
        video_text.split("\ncalibration_provenance:")[0],
    )
    assert lowered == len(load_pack(ROOT / "policies" / "videos.yaml").categories)
    (folder / "videos-v2.yaml").write_text(
        video_text.replace("name: short-videos\n", "name: short-videos-v2\nmode: shadow\n", 1) + "\n"
    )
    for heads in (ROOT / "policies").glob("*.heads.json"):  # what the copied pack names
        shutil.copy(heads, folder / heads.name)
    return [folder / "listings-v2.yaml", folder / "videos-v2.yaml"]


def verdicts_of(records: list[Received], topic: str) -> list[Verdict]:
    return [Verdict.model_validate_json(r.value) for r in records if r.topic == topic]


async def test_shadow_verdicts_audit_samples_and_review_tickets(
    broker: Broker, topics: TopicSettings, start_worker: StartWorker, tmp_path: Path
) -> None:
    shadow_files = candidates(tmp_path)
    live = load_policy_set([ROOT / "policies"])
    shadows = {p.name: p for p in (load_pack(f) for f in shadow_files)}
    everything = PolicySet([*live.policies, *shadows.values()])
    worker = start_worker(
        STREAMPROC_POLICY__PATHS=json.dumps([str(ROOT / "policies"), str(tmp_path)]),
        STREAMPROC_AUDIT__BASE_RATE=str(AUDIT.base_rate),
        STREAMPROC_AUDIT__DECISION_RATES=json.dumps(AUDIT.decision_rates),
    )

    listings, videos = sample_events("listings.jsonl")[:8], sample_events("videos.jsonl")[:4]
    for i, item in enumerate([*listings, *videos]):
        item["audience"] = [None, 0, 40, 2500][i % 4]  # reach: 1, 1, 40, 2500
    # Reviews by rule: an off-platform contact (pre-model, no scores: always review) and a
    # first listing in a regulated category (post-model: review unless the model flags it).
    listings[0]["description"] = f"{listings[0]['description']} Message me on WhatsApp for a discount."
    listings[1].update(category_path=["Health", "Supplements"], attributes={"first_listing": "true"})
    await publish_content(broker.bootstrap, topics, listings, videos)
    events = {str(x["listing_id"]): decode_event("listing", orjson.dumps(x)) for x in listings} | {
        str(x["video_id"]): decode_event("video", orjson.dumps(x)) for x in videos
    }

    received = await consume(broker.bootstrap, [topics.verdicts, topics.shadow, topics.dlq], 24)
    assert not [r for r in received if r.topic == topics.dlq]

    # Live: exactly one verdict per event, from the live packs only.
    live_verdicts = verdicts_of(received, topics.verdicts)
    assert sorted(v.content_id for v in live_verdicts) == sorted(events)
    for verdict in live_verdicts:
        assert verdict.mode == "live"
        assert verdict.policy_version == live.select(events[verdict.content_id]).version

    # Shadow: one candidate verdict per event, on the shadow topic only.
    shadow_verdicts = verdicts_of(received, topics.shadow)
    assert sorted(v.content_id for v in shadow_verdicts) == sorted(events)
    for verdict in shadow_verdicts:
        [expected] = everything.shadows(events[verdict.content_id])
        assert verdict.mode == "shadow" and verdict.policy_version == expected.version
        assert verdict.idempotency_key.endswith(f":{expected.version}")
    assert any(v.scores for v in [*live_verdicts, *shadow_verdicts]), "the model never scored an item"

    # Review and audit: read exactly what the live verdicts say should be there (and 1 s more).
    reviews = [v for v in live_verdicts if v.decision == "review"]
    expected_audit: dict[str, AuditDraw] = {}
    for verdict in live_verdicts:
        policy = live.select(events[verdict.content_id])
        draw = audit_probability(verdict, policy, AUDIT)
        if drawn(verdict.idempotency_key, draw.probability):
            expected_audit[verdict.idempotency_key] = draw
    assert any(v.decision != "approve" for v in live_verdicts), (
        "the samples' rule violations were not decided"
    )
    rest = await consume(broker.bootstrap, [topics.review, topics.audit], len(reviews) + len(expected_audit))
    on_review = verdicts_of(rest, topics.review)
    audits = [AuditSample.model_validate_json(r.value) for r in rest if r.topic == topics.audit]
    shadow_keys = {v.idempotency_key for v in shadow_verdicts}
    assert not shadow_keys & {v.idempotency_key for v in [*live_verdicts, *on_review]}
    assert not shadow_keys & {a.verdict.idempotency_key for a in audits}

    assert sorted(v.idempotency_key for v in on_review) == sorted(v.idempotency_key for v in reviews)
    assert "L-1001" in {v.content_id for v in on_review}  # the pre-model rule: no scores, risk 1
    check_review_tickets(on_review, live, events)
    check_audit_samples(audits, expected_audit, live_verdicts)

    assert worker.total("streamproc_verdicts_total") == 12
    assert worker.total("streamproc_shadow_verdicts_total") == 12
    assert worker.total("streamproc_shadow_agreement_total") == 12
    agreed = sum(
        1
        for s in shadow_verdicts
        for v in live_verdicts
        if v.content_id == s.content_id and v.decision == s.decision
    )
    assert worker.total("streamproc_shadow_agreement_total", agreed="true") == agreed
    assert worker.total("streamproc_audit_samples_total") == len(audits)
    assert worker.total("streamproc_shadow_failures_total") == 0


def check_review_tickets(reviews: list[Verdict], live: PolicySet, events: dict[str, ContentEvent]) -> None:
    for verdict in reviews:
        ticket = verdict.review
        assert ticket is not None
        event = events[verdict.content_id]
        assert ticket.risk == (max(verdict.scores.values()) if verdict.scores else 1.0)
        assert ticket.reach == max(1, event.audience or 1)
        assert math.isclose(ticket.priority, ticket.risk * ticket.reach)
        sla = live.select(event).review_sla(verdict.flagged_categories)
        assert ticket.deadline > verdict.produced_at
        assert ticket.deadline - verdict.produced_at == timedelta(hours=sla)
    # One worked by hand: L-1001 (audience None) reviewed by the off-platform-contact rule
    # before the model: no scores, spam flagged, no category SLA for spam: the pack's 24 h.
    [contact] = [v for v in reviews if v.content_id == "L-1001"]
    assert contact.review is not None and contact.flagged_categories == ["spam"]
    assert (contact.review.risk, contact.review.reach, contact.review.priority) == (1.0, 1.0, 1.0)
    assert contact.review.deadline - contact.produced_at == timedelta(hours=24)


def check_audit_samples(
    audits: list[AuditSample], expected: dict[str, AuditDraw], live_verdicts: list[Verdict]
) -> None:
    """Exactly the verdicts the deterministic draw selects, each with its probability and weight."""
    assert sorted(a.verdict.idempotency_key for a in audits) == sorted(expected)
    for audit in audits:
        draw = expected[audit.verdict.idempotency_key]
        assert audit.verdict.mode == "live"
        assert (audit.probability, audit.stratum) == (draw.probability, draw.stratum)
        assert math.isclose(audit.weight, 1 / audit.probability)
        # from AUDIT alone: review and reject at 1; approvals at 0.5, or 1 once boosted (x5, capped)
        decision = audit.verdict.decision
        assert audit.probability in ({1.0} if decision != "approve" else {0.5, 1.0})
        assert audit.stratum.startswith(f"{decision}/")
    decided = {v.idempotency_key for v in live_verdicts if v.decision != "approve"}
    assert decided <= {a.verdict.idempotency_key for a in audits}  # their rate is 1
