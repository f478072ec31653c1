"""End to end: real broker, real vLLM server, `streamproc worker` as its own process."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from streamproc.config import TopicSettings
from streamproc.decision import decide
from streamproc.devstack import Broker, free_port
from streamproc.policy import DEFAULT_POLICIES
from streamproc.schemas import DeadLetter, Verdict
from tests.factories import listing_dict
from tests.integration.conftest import SERVED_MODEL, StartWorker
from tests.integration.kafka_io import consume, produce

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
VERDICT_SCHEMA = jsonschema.Draft202012Validator(
    json.loads((ROOT / "topics" / "schemas" / "verdict.v1.json").read_text())
)


def sample(name: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in (ROOT / "samples" / name).read_bytes().splitlines()]


async def test_listings_and_videos_get_verdicts_on_the_right_topics(
    broker: Broker, topics: TopicSettings, start_worker: StartWorker
) -> None:
    worker = start_worker()
    listings, videos = sample("listings.jsonl")[:4], sample("videos.jsonl")[:2]
    await produce(
        broker.bootstrap,
        topics.listings,
        [(str(x["listing_id"]).encode(), orjson.dumps(x)) for x in listings],
    )
    await produce(
        broker.bootstrap, topics.videos, [(str(x["video_id"]).encode(), orjson.dumps(x)) for x in videos]
    )

    received = await consume(broker.bootstrap, [topics.verdicts, topics.review, topics.dlq], 6)
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
        policy = DEFAULT_POLICIES[verdict.content_type]
        assert verdict.policy_version == policy.version and verdict.model == SERVED_MODEL
        assert verdict.idempotency_key == f"{verdict.content_type}:{content_id}:0:{policy.version}"
        if verdict.decided_by.kind == "error":
            assert verdict.decision == "review"
        else:  # the decision is the policy applied to the reported scores
            assert set(verdict.scores) == set(policy.category_ids)
            assert verdict.decision == decide(policy, verdict.scores).decision
            assert verdict.usage is not None and verdict.usage.prompt_tokens > 100
            assert verdict.latency.inference_seconds is not None and verdict.latency.inference_seconds > 0
    reviews = sorted(
        Verdict.model_validate_json(r.value).content_id for r in received if r.topic == topics.review
    )
    assert reviews == sorted(cid for cid, (_, v) in verdicts.items() if v.decision == "review")

    assert worker.total("streamproc_events_consumed_total") == 6
    assert worker.total("streamproc_events_consumed_total", topic=topics.videos) == 2
    assert worker.total("streamproc_verdicts_total") == 6
    assert worker.total("streamproc_end_to_end_latency_seconds_count") == 6
    assert worker.total("streamproc_model_request_latency_seconds_count") >= 6
    assert worker.total("streamproc_prompt_tokens_total") > 600
    assert worker.total("streamproc_model_requests_in_flight") == 0


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


async def test_thresholds_from_settings_change_decisions(
    broker: Broker, topics: TopicSettings, start_worker: StartWorker
) -> None:
    # review=reject=0 for counterfeit: any answer the model gives must end as a reject.
    worker = start_worker(STREAMPROC_POLICY__THRESHOLDS='{"counterfeit": {"review": 0.0, "reject": 0.0}}')
    items = [
        listing_dict(listing_id=f"L-t{i}", title=title) for i, title in enumerate(["Wool scarf", "Oak table"])
    ]
    await produce(
        broker.bootstrap, topics.listings, [(str(x["listing_id"]).encode(), orjson.dumps(x)) for x in items]
    )
    received = await consume(broker.bootstrap, [topics.verdicts], 2)
    verdicts = [Verdict.model_validate_json(r.value) for r in received]
    assert len(verdicts) == 2
    scored = [v for v in verdicts if v.decided_by.kind != "error"]
    assert scored, f"the model answered outside the label set for every item: {verdicts}"
    for verdict in scored:
        assert (verdict.decision, verdict.reason_code) == ("reject", "COUNTERFEIT")
        assert verdict.policy_version != DEFAULT_POLICIES["listing"].version
    assert worker.total("streamproc_verdicts_total", decision="reject", category="counterfeit") == len(scored)


async def test_model_server_down_never_approves(
    broker: Broker, topics: TopicSettings, start_worker: StartWorker
) -> None:
    worker = start_worker(
        STREAMPROC_INFERENCE__BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
        STREAMPROC_INFERENCE__MAX_ATTEMPTS="2",
    )
    items = [listing_dict(listing_id=f"L-d{i}") for i in range(3)]
    await produce(
        broker.bootstrap, topics.listings, [(str(x["listing_id"]).encode(), orjson.dumps(x)) for x in items]
    )
    received = await consume(broker.bootstrap, [topics.verdicts, topics.review], 6)
    verdicts = [Verdict.model_validate_json(r.value) for r in received if r.topic == topics.verdicts]
    assert sorted(v.content_id for v in verdicts) == ["L-d0", "L-d1", "L-d2"]
    for verdict in verdicts:
        assert verdict.decision == "review"
        assert (verdict.reason_code, verdict.decided_by.id) == ("INFERENCE_ERROR", "unavailable")
    assert len([r for r in received if r.topic == topics.review]) == 3
    assert worker.total("streamproc_inference_errors_total", kind="unavailable") == 6  # 3 items x 2 attempts
    assert worker.total("streamproc_inference_retries_total") == 3
    assert worker.total("streamproc_verdicts_total", category="inference_error", decision="review") == 3


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
