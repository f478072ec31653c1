from __future__ import annotations

import math

import orjson
import pytest
from prometheus_client import CollectorRegistry

from streamproc.config import Settings
from streamproc.errors import InferenceError, InferenceTimeout
from streamproc.inference.protocol import ModelAnswer, ModelRequest, TokenChoice
from streamproc.metrics import PrometheusWorkerMetrics
from streamproc.policy import PolicySet, Thresholds
from streamproc.schemas import DeadLetter, Verdict
from streamproc.stream import InboundRecord
from streamproc.worker import Processor
from tests.factories import label_policies, listing_dict, video_dict, worker_processor

SETTINGS = Settings(kafka={"client_id": "worker-1"})
TOPICS = SETTINGS.topics


class FakeModel:
    """Answers with fixed label probabilities, or raises."""

    def __init__(
        self, probabilities: dict[str, float] | None = None, error: InferenceError | None = None
    ) -> None:
        self.probabilities = probabilities or {"N": 1.0}
        self.error = error
        self.calls: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        self.calls.append(request)
        if self.error is not None:
            raise self.error
        top = tuple((label, math.log(p)) for label, p in self.probabilities.items())
        token = TokenChoice(top[0][0], top[0][1], top)
        return ModelAnswer(
            top[0][0], (token,), prompt_tokens=100, completion_tokens=1, cached_prompt_tokens=80, seconds=0.01
        )


def processor(model: FakeModel, metrics: PrometheusWorkerMetrics) -> Processor:
    policies = PolicySet(
        [
            p.with_thresholds({c: Thresholds(reject=0.8, review=0.5) for c in p.category_ids})
            for p in label_policies().policies
        ]
    )
    return worker_processor(SETTINGS, policies, model, metrics)


def record(value: bytes | None, topic: str = TOPICS.listings, key: bytes | None = b"L-1") -> InboundRecord:
    return InboundRecord(topic=topic, partition=2, offset=41, key=key, value=value)


async def test_clean_listing_is_approved_with_one_verdict(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    outputs = await processor(FakeModel({"N": 0.9, "A": 0.1}), metrics).process(
        record(orjson.dumps(listing_dict(listing_id="L-1", revision=4)))
    )
    assert [o.topic for o in outputs] == [TOPICS.verdicts]
    verdict = Verdict.model_validate_json(outputs[0].value)
    assert outputs[0].key == b"L-1"
    assert dict(outputs[0].headers)["idempotency-key"] == verdict.idempotency_key.encode()
    assert verdict.decision == "approve" and verdict.revision == 4
    assert verdict.scores["counterfeit"] == pytest.approx(0.1)
    assert verdict.usage is not None and verdict.usage.cached_prompt_tokens == 80
    assert (verdict.source.topic, verdict.source.partition, verdict.source.offset) == (TOPICS.listings, 2, 41)
    assert verdict.model == SETTINGS.inference.model
    labels = {"content_type": "listing", "decision": "approve", "category": "none"}
    assert registry.get_sample_value("streamproc_verdicts_total", labels) == 1
    assert registry.get_sample_value("streamproc_events_consumed_total", {"topic": TOPICS.listings}) == 1
    assert registry.get_sample_value("streamproc_prompt_tokens_total") == 100
    assert registry.get_sample_value("streamproc_cached_prompt_tokens_total") == 80
    count = "streamproc_end_to_end_latency_seconds_count"
    assert registry.get_sample_value(count, {"content_type": "listing"}) == 1


async def test_review_goes_to_verdicts_and_review_queue(metrics: PrometheusWorkerMetrics) -> None:
    outputs = await processor(FakeModel({"N": 0.4, "E": 0.6}), metrics).process(
        record(orjson.dumps(listing_dict()))
    )
    assert [o.topic for o in outputs] == [TOPICS.verdicts, TOPICS.review]
    assert outputs[0].value == outputs[1].value
    verdict = Verdict.model_validate_json(outputs[0].value)
    assert (verdict.decision, verdict.decided_by.id, verdict.reason_code) == (
        "review",
        "misleading_claims",
        "MISLEADING_CLAIM",
    )


async def test_video_reject_uses_the_video_policy(metrics: PrometheusWorkerMetrics) -> None:
    model = FakeModel({"G": 0.95, "N": 0.05})
    outputs = await processor(model, metrics).process(
        record(orjson.dumps(video_dict(video_id="V-9")), topic=TOPICS.videos, key=b"V-9")
    )
    verdict = Verdict.model_validate_json(outputs[0].value)
    assert (verdict.decision, verdict.decided_by.id, verdict.content_type) == (
        "reject",
        "dangerous_acts",
        "video",
    )
    assert verdict.policy_version.startswith("short-videos@")
    assert "Dangerous acts" in model.calls[0].body["messages"][0]["content"]


async def test_inference_error_becomes_review_never_approve(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    outputs = await processor(FakeModel(error=InferenceTimeout("slow")), metrics).process(
        record(orjson.dumps(listing_dict()))
    )
    verdict = Verdict.model_validate_json(outputs[0].value)
    assert verdict.decision == "review" and verdict.reason_code == "INFERENCE_ERROR"
    assert verdict.scores == {} and verdict.usage is None
    assert [o.topic for o in outputs] == [TOPICS.verdicts, TOPICS.review]
    labels = {"content_type": "listing", "decision": "review", "category": "inference_error"}
    assert registry.get_sample_value("streamproc_verdicts_total", labels) == 1


async def test_answer_outside_the_label_set_is_reviewed_and_counted(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    outputs = await processor(FakeModel({"The": 0.7, "I": 0.3}), metrics).process(
        record(orjson.dumps(listing_dict()))
    )
    verdict = Verdict.model_validate_json(outputs[0].value)
    assert (verdict.decision, verdict.decided_by.id) == ("review", "protocol_error")
    assert verdict.usage is not None  # the server did answer
    assert registry.get_sample_value("streamproc_inference_errors_total", {"kind": "protocol_error"}) == 1


async def test_malformed_input_goes_to_the_dead_letter_topic(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    model = FakeModel()
    outputs = await processor(model, metrics).process(record(b"\xff\xfe not json", key=b"L-bad"))
    assert [o.topic for o in outputs] == [TOPICS.dlq]
    assert outputs[0].key == b"L-bad"
    letter = DeadLetter.model_validate_json(outputs[0].value)
    assert letter.reason == "invalid_json" and letter.payload_encoding == "base64"
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (TOPICS.listings, 2, 41)
    assert letter.worker == "worker-1"
    assert model.calls == []
    assert registry.get_sample_value("streamproc_dead_letters_total", {"reason": "invalid_json"}) == 1


async def test_schema_violation_keeps_the_text_payload(metrics: PrometheusWorkerMetrics) -> None:
    raw = orjson.dumps(listing_dict(price={"amount": "1", "currency": "euro"}))
    letter = DeadLetter.model_validate_json(
        (await processor(FakeModel(), metrics).process(record(raw)))[0].value
    )
    assert letter.reason == "schema_validation" and "price.currency" in letter.error_message
    assert letter.payload.encode() == raw and letter.payload_encoding == "utf-8"


class BrokenModel:
    async def complete(self, request: ModelRequest) -> ModelAnswer:
        raise RuntimeError("bug")


async def test_an_unexpected_error_is_dead_lettered_not_raised(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    broken = worker_processor(SETTINGS, label_policies(), BrokenModel(), metrics)
    outputs = await broken.process(record(orjson.dumps(listing_dict())))
    letter = DeadLetter.model_validate_json(outputs[0].value)
    assert [o.topic for o in outputs] == [TOPICS.dlq]
    assert (letter.reason, letter.error_type, letter.error_message) == (
        "internal_error",
        "RuntimeError",
        "bug",
    )
    assert registry.get_sample_value("streamproc_dead_letters_total", {"reason": "internal_error"}) == 1


async def test_a_pre_rule_decides_without_calling_the_model(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    model = FakeModel()
    raw = orjson.dumps(listing_dict(title="Rolex Submariner replica", attributes={"brand": "Rolex"}))
    verdict = Verdict.model_validate_json((await processor(model, metrics).process(record(raw)))[0].value)
    assert (verdict.decision, verdict.decided_by.kind, verdict.decided_by.id) == (
        "reject",
        "rule",
        "blocked-terms",
    )
    assert verdict.reason_code == "BLOCKED_TERM" and verdict.scores == {} and verdict.usage is None
    assert model.calls == []
    assert registry.get_sample_value("streamproc_model_calls_saved_total") == 1
    assert (
        registry.get_sample_value("streamproc_rule_matches_total", {"stage": "pre", "rule": "blocked-terms"})
        == 1
    )


async def test_a_post_rule_overrides_the_model(metrics: PrometheusWorkerMetrics) -> None:
    raw = orjson.dumps(
        listing_dict(category_path=["Health", "Supplements"], attributes={"first_listing": "true"})
    )
    outputs = await processor(FakeModel({"N": 1.0}), metrics).process(record(raw))
    verdict = Verdict.model_validate_json(outputs[0].value)
    assert (verdict.decision, verdict.decided_by.id) == ("review", "first-listing-in-regulated-category")
    assert verdict.scores["counterfeit"] == 0.0  # the model was asked, and its scores are kept
    assert [o.topic for o in outputs] == [TOPICS.verdicts, TOPICS.review]


async def test_per_item_request_and_token_counts(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    await processor(FakeModel(), metrics).process(record(orjson.dumps(listing_dict())))
    labels = {"scorer": "label_logprob"}
    assert registry.get_sample_value("streamproc_model_requests_per_item_sum", labels) == 1
    assert registry.get_sample_value("streamproc_completion_tokens_per_item_sum", labels) == 1
