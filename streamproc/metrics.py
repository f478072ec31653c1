"""Every Prometheus metric streamproc exports, defined in one place.

Names carry base units (``_seconds``, ``_total``); label sets are small and fixed, and
are pre-initialised so that dashboards show zeros rather than gaps.
"""

from __future__ import annotations

from typing import NamedTuple, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamproc.schemas.dead_letter import DeadLetterReason

__all__ = ["DEFAULT_NAMESPACE", "Metrics", "create"]

DEFAULT_NAMESPACE = "streamproc"

# The default buckets stop at 10 s; end-to-end latency includes queueing in Kafka,
# which can reach minutes under backlog.
_COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics(NamedTuple):
    events_consumed: Counter
    verdicts: Counter
    dead_letters: Counter
    end_to_end_latency: Histogram
    processing_latency: Histogram
    model_request_latency: Histogram
    model_requests_in_flight: Gauge
    model_concurrency_limit: Gauge
    model_circuit_open: Gauge
    items_in_flight: Gauge
    consumption_paused: Gauge
    offset_commits: Counter
    rebalances: Counter
    inference_errors: Counter
    inference_retries: Counter
    prompt_tokens: Counter
    cached_prompt_tokens: Counter
    model_requests_per_item: Histogram
    completion_tokens_per_item: Histogram
    rule_matches: Counter
    model_calls_saved: Counter
    policy_reloads: Counter
    policy_info: Gauge


def create(
    registry: CollectorRegistry,
    namespace: str = DEFAULT_NAMESPACE,
    *,
    consumed_topics: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
) -> Metrics:
    """Create and register the metrics; label values given here start at zero."""
    metrics = Metrics(
        events_consumed=Counter(
            "events_consumed",
            "Input records received, by topic.",
            ["topic"],
            namespace=namespace,
            registry=registry,
        ),
        verdicts=Counter(
            "verdicts",
            "Verdicts produced, by content type, decision and deciding category.",
            ["content_type", "decision", "category"],
            namespace=namespace,
            registry=registry,
        ),
        dead_letters=Counter(
            "dead_letters",
            "Input records sent to the dead-letter topic, by reason.",
            ["reason"],
            namespace=namespace,
            registry=registry,
        ),
        end_to_end_latency=Histogram(
            "end_to_end_latency_seconds",
            "From the event's created_at to its verdict being produced.",
            ["content_type"],
            namespace=namespace,
            registry=registry,
            buckets=_E2E_BUCKETS,
        ),
        processing_latency=Histogram(
            "processing_latency_seconds",
            "From the worker receiving an event to its verdict being produced.",
            ["content_type"],
            namespace=namespace,
            registry=registry,
            buckets=_E2E_BUCKETS,
        ),
        model_request_latency=Histogram(
            "model_request_latency_seconds",
            "Duration of one HTTP request to the model server, failures included.",
            namespace=namespace,
            registry=registry,
        ),
        model_requests_in_flight=Gauge(
            "model_requests_in_flight",
            "Requests to the model server awaiting an answer.",
            namespace=namespace,
            registry=registry,
        ),
        model_concurrency_limit=Gauge(
            "model_concurrency_limit",
            "Requests the adaptive limit currently allows in flight.",
            namespace=namespace,
            registry=registry,
        ),
        model_circuit_open=Gauge(
            "model_circuit_open",
            "1 while the circuit breaker leaves the model server alone after repeated failures.",
            namespace=namespace,
            registry=registry,
        ),
        items_in_flight=Gauge(
            "items_in_flight",
            "Input records taken from Kafka whose outputs are not yet acknowledged.",
            namespace=namespace,
            registry=registry,
        ),
        consumption_paused=Gauge(
            "consumption_paused",
            "1 while the worker has paused fetching (window full or model server unavailable).",
            namespace=namespace,
            registry=registry,
        ),
        offset_commits=Counter(
            "offset_commits",
            "Offset commits, by result (ok or failed).",
            ["result"],
            namespace=namespace,
            registry=registry,
        ),
        rebalances=Counter(
            "rebalances",
            "Partition assignment changes, by event (assigned or revoked).",
            ["event"],
            namespace=namespace,
            registry=registry,
        ),
        inference_errors=Counter(
            "inference_errors",
            "Failed model requests, by kind (each attempt counts).",
            ["kind"],
            namespace=namespace,
            registry=registry,
        ),
        inference_retries=Counter(
            "inference_retries",
            "Model requests retried after a retriable failure.",
            namespace=namespace,
            registry=registry,
        ),
        prompt_tokens=Counter(
            "prompt_tokens",
            "Prompt tokens the model server reported.",
            namespace=namespace,
            registry=registry,
        ),
        cached_prompt_tokens=Counter(
            "cached_prompt_tokens",
            "Prompt tokens the model server reported as served from its prefix cache.",
            namespace=namespace,
            registry=registry,
        ),
        model_requests_per_item=Histogram(
            "model_requests_per_item",
            "Model requests one item needed, by scorer.",
            ["scorer"],
            namespace=namespace,
            registry=registry,
            buckets=_COUNT_BUCKETS,
        ),
        completion_tokens_per_item=Histogram(
            "completion_tokens_per_item",
            "Tokens the model generated for one item, by scorer.",
            ["scorer"],
            namespace=namespace,
            registry=registry,
            buckets=_COUNT_BUCKETS,
        ),
        rule_matches=Counter(
            "rule_matches",
            "Items decided or overridden by a policy rule, by stage and rule.",
            ["stage", "rule"],
            namespace=namespace,
            registry=registry,
        ),
        model_calls_saved=Counter(
            "model_calls_saved",
            "Model requests not sent because a pre-model rule decided the item.",
            namespace=namespace,
            registry=registry,
        ),
        policy_reloads=Counter(
            "policy_reloads",
            "Policy pack reloads, by result (applied or rejected).",
            ["result"],
            namespace=namespace,
            registry=registry,
        ),
        policy_info=Gauge(
            "policy_info",
            "1 for each policy pack version being served.",
            ["name", "version"],
            namespace=namespace,
            registry=registry,
        ),
    )
    for result in ("applied", "rejected"):
        metrics.policy_reloads.labels(result=result)
    for topic in consumed_topics:
        metrics.events_consumed.labels(topic=topic)
    for reason in get_args(DeadLetterReason):
        metrics.dead_letters.labels(reason=reason)
    for result in ("ok", "failed"):
        metrics.offset_commits.labels(result=result)
    for event in ("assigned", "revoked"):
        metrics.rebalances.labels(event=event)
    for kind in ("unavailable", "timeout", "server_error", "request_error", "protocol_error", "circuit_open"):
        metrics.inference_errors.labels(kind=kind)
    for content_type in ("listing", "video"):
        metrics.end_to_end_latency.labels(content_type=content_type)
        metrics.processing_latency.labels(content_type=content_type)
        for decision in ("approve", "reject", "review"):
            for category in (*categories, "none", "inference_error", "rule"):
                metrics.verdicts.labels(content_type=content_type, decision=decision, category=category)
    return metrics
