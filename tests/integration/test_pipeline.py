"""End to end: real broker, real vLLM server, `streamproc worker` as its own process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jsonschema
import orjson
import pytest

from streamproc.config import TopicSettings
from streamproc.decision import decide
from streamproc.dev.devstack import Broker, free_port
from streamproc.policy import load_pack
from streamproc.schemas import DeadLetter, Verdict, decode_event
from tests.factories import listing_dict, sample_events, shipped_policies
from tests.integration.conftest import EMBEDDING_MODEL, SESSION_TIMEOUT_SECONDS, StartWorker
from tests.integration.kafka_io import consume, produce, publish_content

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
VERDICT_SCHEMA = jsonschema.Draft202012Validator(
    json.loads((ROOT / "topics" / "schemas" / "verdict.v1.json").read_text())
)


def smoke(broker: Broker, topics: TopicSettings) -> subprocess.CompletedProcess[str]:
    """`streamproc smoke` (the chart's `helm test`) against this test's broker and topics."""
    env = {
        **os.environ,
        "STREAMPROC_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
        **{f"STREAMPROC_TOPICS__{field.upper()}": name for field, name in topics.model_dump().items()},
    }
    return subprocess.run(
        [sys.executable, "-m", "streamproc", "smoke", "--timeout", "240"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def test_listings_and_videos_get_verdicts_on_the_right_topics(
    broker: Broker, topics: TopicSettings, start_worker: StartWorker
) -> None:
    worker = start_worker()
    listings, videos = sample_events("listings.jsonl")[:4], sample_events("videos.jsonl")[:2]
    await publish_content(broker.bootstrap, topics, listings, videos)

    events = {str(x["listing_id"]): decode_event("listing", orjson.dumps(x)) for x in listings} | {
        str(x["video_id"]): decode_event("video", orjson.dumps(x)) for x in videos
    }
    # Until six verdicts: items the model flags for review also appear on the review topic.
    received = await consume(
        broker.bootstrap,
        [topics.verdicts, topics.review, topics.dlq],
        6,
        until=lambda records: sum(r.topic == topics.verdicts for r in records) >= 6,
    )
    on_verdicts = [r for r in received if r.topic == topics.verdicts]
    assert not [r for r in received if r.topic == topics.dlq]
    verdicts = {
        Verdict.model_validate_json(r.value).content_id: (r, Verdict.model_validate_json(r.value))
        for r in on_verdicts
    }
    assert len(on_verdicts) == 6
    assert set(verdicts) == {x["listing_id"] for x in listings} | {x["video_id"] for x in videos}
    for content_id, (record, verdict) in verdicts.items():
        VERDICT_SCHEMA.validate(orjson.loads(record.value))  # the published contract
        assert record.key == content_id.encode()
        assert record.headers["idempotency-key"] == verdict.idempotency_key.encode()
        policy = shipped_policies().select(events[content_id])
        assert verdict.policy_version == policy.version and verdict.model == EMBEDDING_MODEL
        assert verdict.idempotency_key == f"{verdict.content_type}:{content_id}:0:{policy.version}"
        if verdict.decided_by.kind == "error":
            assert verdict.decision == "review"
        else:  # the decision is the policy applied to the reported scores
            assert set(verdict.scores) == set(policy.category_ids)
            assert verdict.decision == decide(policy, verdict.scores).decision
            assert verdict.usage is not None and verdict.usage.prompt_tokens > 10
            assert verdict.latency.inference_seconds is not None and verdict.latency.inference_seconds > 0
    scored = [v for _, v in verdicts.values() if v.decided_by.kind != "error"]
    assert scored, "every item failed inference: the checks on scores above never ran"
    reviews = sorted(
        Verdict.model_validate_json(r.value).content_id for r in received if r.topic == topics.review
    )
    assert reviews == sorted(cid for cid, (_, v) in verdicts.items() if v.decision == "review")

    assert worker.total("streamproc_events_consumed_total") == 6
    assert worker.total("streamproc_events_consumed_total", topic=topics.videos) == 2
    assert worker.total("streamproc_verdicts_total") == 6
    assert worker.total("streamproc_end_to_end_latency_seconds_count") == 6
    assert worker.total("streamproc_model_request_latency_seconds_count") >= 6
    assert worker.total("streamproc_prompt_tokens_total") > 10 * len(scored)
    assert worker.total("streamproc_model_requests_in_flight") == 0

    # The deployment's smoke test: its own listing, decided by the model.
    done = smoke(broker, topics)
    assert done.returncode == 0, done.stderr
    line = r"smoke-[0-9a-f]{32}: (approve|review|reject) after .* decided by \S+.*\n"
    assert re.fullmatch(line, done.stdout), done.stdout
    assert worker.total("streamproc_verdicts_total") == 7


async def test_malformed_events_are_dead_lettered_and_the_next_valid_one_decided(
    broker: Broker, topics: TopicSettings, start_worker: StartWorker
) -> None:
    worker = start_worker()
    bad_schema = listing_dict(listing_id="L-bad", price={"amount": "5", "currency": "dollars"})
    await produce(
        broker.bootstrap,
        topics.listings,
        [
            (b"L-junk", b'{"listing_id": "L-junk", "title": '),
            (b"L-bad", orjson.dumps(bad_schema)),
            (b"L-good", orjson.dumps(listing_dict(listing_id="L-good"))),
        ],
    )
    received = await consume(broker.bootstrap, [topics.verdicts, topics.dlq], 3)
    letters = {r.key: DeadLetter.model_validate_json(r.value) for r in received if r.topic == topics.dlq}
    assert {k: v.reason for k, v in letters.items()} == {
        b"L-junk": "invalid_json",
        b"L-bad": "schema_validation",
    }
    assert "price.currency" in letters[b"L-bad"].error_message
    assert letters[b"L-junk"].payload == '{"listing_id": "L-junk", "title": '
    assert letters[b"L-bad"].source_topic == topics.listings
    verdicts = [Verdict.model_validate_json(r.value) for r in received if r.topic == topics.verdicts]
    assert [v.content_id for v in verdicts] == ["L-good"]
    assert worker.total("streamproc_dead_letters_total", reason="invalid_json") == 1
    assert worker.total("streamproc_dead_letters_total", reason="schema_validation") == 1


async def wait_for(condition: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_editing_a_pack_changes_decisions_without_restart_and_a_broken_edit_is_rejected(
    broker: Broker, topics: TopicSettings, start_worker: StartWorker, tmp_path: Path
) -> None:
    packs = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", packs)
    worker = start_worker(STREAMPROC_POLICY__PATHS=json.dumps([str(packs)]))

    async def verdict_for(listing_id: str, seen: int) -> Verdict:
        item = listing_dict(listing_id=listing_id, title="Wool scarf")
        await produce(broker.bootstrap, topics.listings, [(listing_id.encode(), orjson.dumps(item))])
        received = await consume(broker.bootstrap, [topics.verdicts], seen + 1)
        [verdict] = [
            v for v in (Verdict.model_validate_json(r.value) for r in received) if v.content_id == listing_id
        ]
        return verdict

    first = await verdict_for("L-h1", 0)
    assert first.policy_version == load_pack(ROOT / "policies" / "listings.yaml").version

    # review = reject = 0 for counterfeit (the first category): any scored answer must now be a reject
    listings = packs / "listings.yaml"
    text, edited_lines = re.subn(
        r"thresholds: \{[^}]*\}", "thresholds: {reject: 0.0, review: 0.0}", listings.read_text(), count=1
    )
    assert edited_lines == 1
    listings.write_text(text)
    edited = load_pack(listings).version
    await wait_for(lambda: worker.total("streamproc_policy_reloads_total", result="applied") >= 1, "reload")
    second = await verdict_for("L-h2", 1)
    assert second.policy_version == edited != first.policy_version
    # the served model's answers must be scored for this check to mean anything
    assert second.decided_by.kind == "category", f"not scored by the model: {second.decided_by}"
    # Counterfeit now rejects; another category rejecting with a higher score would decide instead.
    assert second.decision == "reject" and "counterfeit" in second.flagged_categories
    assert worker.total("streamproc_policy_info", name="marketplace-listings", version=edited) == 1

    listings.write_text(listings.read_text().replace("reason_code: SPAM", "reason_code: not a code"))
    await wait_for(
        lambda: worker.total("streamproc_policy_reloads_total", result="rejected") >= 1, "rejection"
    )
    third = await verdict_for("L-h3", 2)
    assert third.policy_version == edited  # the last valid version keeps serving
    assert worker.process.alive()


async def test_model_server_down_escalates_to_review_when_not_holding(
    broker: Broker, topics: TopicSettings, start_worker: StartWorker
) -> None:
    down = f"http://127.0.0.1:{free_port()}/v1"
    worker = start_worker(
        STREAMPROC_INFERENCE__BASE_URL=down,
        STREAMPROC_EMBEDDING__BASE_URL=down,  # the shipped packs' embedding server, down as well
        STREAMPROC_INFERENCE__MAX_ATTEMPTS="2",
        STREAMPROC_INFERENCE__ON_UNAVAILABLE="review",
        STREAMPROC_INFERENCE__BREAKER_FAILURES="1000",  # every attempt reaches the (absent) server
    )
    items = [listing_dict(listing_id=f"L-d{i}") for i in range(3)]
    await publish_content(broker.bootstrap, topics, items)
    received = await consume(broker.bootstrap, [topics.verdicts, topics.review], 6)
    verdicts = [Verdict.model_validate_json(r.value) for r in received if r.topic == topics.verdicts]
    assert sorted(v.content_id for v in verdicts) == ["L-d0", "L-d1", "L-d2"]
    for verdict in verdicts:
        assert verdict.decision == "review"
        assert (verdict.reason_code, verdict.decided_by.id) == ("INFERENCE_ERROR", "unavailable")
    assert len([r for r in received if r.topic == topics.review]) == 3
    # The embedding_probe scorer: one request per item, each tried twice.
    requests = 3
    assert worker.total("streamproc_inference_errors_total", kind="unavailable") == 2 * requests
    assert worker.total("streamproc_inference_retries_total") == requests
    assert worker.total("streamproc_verdicts_total", category="inference_error", decision="review") == 3
    # The smoke test does not take a fallback verdict for a working deployment.
    done = smoke(broker, topics)
    assert done.returncode == 1
    assert "got review through the fallback: the model server could not score it (unavailable)" in done.stderr


def test_any_kafka_client_can_publish_a_listing_and_read_its_verdict(
    broker: Broker, topics: TopicSettings, start_worker: StartWorker
) -> None:
    """librdkafka (confluent-kafka), not this project's client, on both ends."""
    from confluent_kafka import Consumer, Producer

    start_worker()
    listing = listing_dict(listing_id="L-rdkafka", title="Leather wallet")
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce(topics.listings, key=b"L-rdkafka", value=json.dumps(listing).encode())
    assert producer.flush(10) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"enforcement-{topics.verdicts}",
            "auto.offset.reset": "earliest",
            # librdkafka's 45 s default would hold the first join for 22 s on Tansu
            "session.timeout.ms": int(SESSION_TIMEOUT_SECONDS * 1000),
            "heartbeat.interval.ms": 1000,
        }
    )
    consumer.subscribe([topics.verdicts])
    try:
        message = None
        for _ in range(240):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                break
        assert message is not None and message.error() is None, "no verdict within 120 s"
        value = message.value()
        assert value is not None
        verdict = json.loads(value)
        assert message.key() == b"L-rdkafka"
        assert verdict["content_id"] == "L-rdkafka" and verdict["decision"] in {"approve", "reject", "review"}
        VERDICT_SCHEMA.validate(verdict)
    finally:
        consumer.close()
