"""An event stamped in the future (the producer's clock is ahead): latency 0, and counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from prometheus_client import CollectorRegistry

from streamproc.config import Settings
from streamproc.decision import build_verdict, decide
from streamproc.inference.protocol import ModelAnswer, ModelRequest, TokenChoice
from streamproc.metrics import NOOP, PrometheusWorkerMetrics
from streamproc.schemas import SourceRef, Verdict
from streamproc.stream import InboundRecord
from tests.factories import default_policy, listing, listing_dict, shipped_policies, worker_processor

SETTINGS = Settings(kafka={"client_id": "worker-1"})
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SKEW = "streamproc_clock_skew_total"


def _verdict_at(created: datetime) -> Verdict:
    policy = default_policy("listing")
    return build_verdict(
        event=listing(created_at=created.isoformat()),
        policy=policy,
        outcome=decide(policy, {}),
        scores={},
        model="m",
        source=SourceRef(topic="t", partition=0, offset=1),
        usage=None,
        inference_seconds=0.1,
        processing_seconds=0.2,
        now=NOW,
    )


def test_end_to_end_latency_of_a_future_event_is_zero() -> None:
    assert _verdict_at(NOW + timedelta(seconds=30)).latency.end_to_end_seconds == 0.0
    assert _verdict_at(NOW - timedelta(seconds=2)).latency.end_to_end_seconds == 2.0


class SafeModel:
    async def complete(self, request: ModelRequest) -> ModelAnswer:
        token = TokenChoice("N", 0.0, (("N", 0.0),))
        return ModelAnswer(
            "N", (token,), prompt_tokens=10, completion_tokens=1, cached_prompt_tokens=0, seconds=0.01
        )


async def _process(created: datetime, metrics: PrometheusWorkerMetrics) -> Verdict:
    processor = worker_processor(SETTINGS, shipped_policies(), SafeModel(), metrics)
    value = orjson.dumps(listing_dict(created_at=created.isoformat()))
    outputs = await processor.process(InboundRecord(SETTINGS.topics.listings, 0, 7, b"L-1", value))
    return Verdict.model_validate_json(outputs[0].value)


async def test_the_worker_counts_events_from_a_clock_ahead_and_records_zero(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    assert registry.get_sample_value(SKEW) == 0  # exported from the start
    verdict = await _process(datetime.now(UTC) + timedelta(minutes=5), metrics)
    assert verdict.latency.end_to_end_seconds == 0.0
    assert registry.get_sample_value(SKEW) == 1
    observed = "streamproc_end_to_end_latency_seconds_sum"
    assert registry.get_sample_value(observed, {"content_type": "listing"}) == 0.0


async def test_events_from_the_past_are_not_counted(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    verdict = await _process(datetime.now(UTC) - timedelta(seconds=3), metrics)
    assert verdict.latency.end_to_end_seconds >= 3.0
    assert registry.get_sample_value(SKEW) == 0


def test_the_noop_recorder_takes_it() -> None:
    NOOP.clock_skew()
