"""Every Prometheus metric streamproc exports, defined in one place.

Names carry base units (``_seconds``, ``_total``); label sets are small and fixed, and
are pre-initialised so that dashboards show zeros rather than gaps.
"""

from __future__ import annotations

from typing import NamedTuple, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamproc.schemas.dead_letter import DeadLetterReason
from streamproc.schemas.verdict import LabelSource

__all__ = ["APPEAL_OUTCOMES", "DEFAULT_NAMESPACE", "Metrics", "QualityMetrics", "create", "create_quality"]

DEFAULT_NAMESPACE = "streamproc"
#: The ``outcome`` label of ``appeals_total`` (see streamproc.quality.appeals.AppealResult).
APPEAL_OUTCOMES = ("stands", "to_human", "content_unavailable", "error")

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
    audit_samples: Counter
    shadow_verdicts: Counter
    shadow_agreement: Counter
    shadow_failures: Counter


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
        audit_samples=Counter(
            "audit_samples",
            "Live verdicts sent to the audit topic, by decision.",
            ["decision"],
            namespace=namespace,
            registry=registry,
        ),
        shadow_verdicts=Counter(
            "shadow_verdicts",
            "Verdicts of shadow (candidate) packs, by pack name and decision; never enforced.",
            ["policy", "decision"],
            namespace=namespace,
            registry=registry,
        ),
        shadow_agreement=Counter(
            "shadow_agreement",
            "Shadow verdicts by whether their decision equals the live decision (agreed: true or false).",
            ["policy", "agreed"],
            namespace=namespace,
            registry=registry,
        ),
        shadow_failures=Counter(
            "shadow_failures",
            "Shadow evaluations that failed with an error (the live verdict is unaffected), by pack name.",
            ["policy"],
            namespace=namespace,
            registry=registry,
        ),
    )
    for decision in ("approve", "reject", "review"):
        metrics.audit_samples.labels(decision=decision)
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


class QualityMetrics(NamedTuple):
    """What ``streamproc quality`` exports.

    The counters count this process's work; the gauges are set from the join store, so
    they survive a restart and cover what the store holds (its retention and size bound).
    """

    records_consumed: Counter
    dead_letters: Counter
    final_verdicts_published: Counter
    store_items: Gauge
    labels: Gauge
    verdicts: Gauge
    pairs: Gauge
    pairs_excluded: Gauge
    confusion: Gauge
    precision: Gauge
    recall: Gauge
    f1: Gauge
    automation: Gauge
    labeler_pairs: Gauge
    labeler_agreement: Gauge
    labeler_exact_agreement: Gauge
    shadow_compared: Gauge
    shadow_agreement: Gauge
    human_verdicts: Gauge
    figures_updated: Gauge
    appeals: Counter


def create_quality(
    registry: CollectorRegistry, namespace: str = DEFAULT_NAMESPACE, *, consumed_topics: tuple[str, ...] = ()
) -> QualityMetrics:
    """Create and register the quality service's metrics."""
    scored = ["policy_version", "mode", "category"]
    metrics = QualityMetrics(
        records_consumed=Counter(
            "quality_records_consumed",
            "Records the quality service received, by topic.",
            ["topic"],
            namespace=namespace,
            registry=registry,
        ),
        dead_letters=Counter(
            "quality_dead_letters",
            "Records the quality service sent to the dead-letter topic, by reason.",
            ["reason"],
            namespace=namespace,
            registry=registry,
        ),
        final_verdicts_published=Counter(
            "quality_final_verdicts_published",
            "Final verdicts published from review and appeal outcomes, by label source.",
            ["source"],
            namespace=namespace,
            registry=registry,
        ),
        store_items=Gauge(
            "quality_store_items",
            "Content revisions held in the join store.",
            namespace=namespace,
            registry=registry,
        ),
        labels=Gauge(
            "quality_labels",
            "Labels held in the join store, by source.",
            ["source"],
            namespace=namespace,
            registry=registry,
        ),
        verdicts=Gauge(
            "quality_verdicts",
            "Automated verdicts held in the join store, by policy version, mode and decision.",
            ["policy_version", "mode", "decision"],
            namespace=namespace,
            registry=registry,
        ),
        pairs=Gauge(
            "quality_pairs",
            "(label, verdict) pairs scored, unweighted.",
            ["policy_version", "mode"],
            namespace=namespace,
            registry=registry,
        ),
        pairs_excluded=Gauge(
            "quality_pairs_excluded",
            "(label, verdict) pairs not scored, by reason (inference_error).",
            ["policy_version", "mode", "reason"],
            namespace=namespace,
            registry=registry,
        ),
        confusion=Gauge(
            "quality_confusion",
            "Weighted (label, verdict) pairs per category and outcome (tp, fp, fn, tn).",
            [*scored, "outcome"],
            namespace=namespace,
            registry=registry,
        ),
        precision=Gauge(
            "quality_precision_ratio",
            "tp / (tp + fp) per category, weighted; 0 when nothing was flagged.",
            scored,
            namespace=namespace,
            registry=registry,
        ),
        recall=Gauge(
            "quality_recall_ratio",
            "tp / (tp + fn) per category, weighted; 0 when nothing truly applies.",
            scored,
            namespace=namespace,
            registry=registry,
        ),
        f1=Gauge(
            "quality_f1_ratio",
            "Harmonic mean of precision and recall per category, weighted.",
            scored,
            namespace=namespace,
            registry=registry,
        ),
        automation=Gauge(
            "quality_automation_ratio",
            "Share of live verdicts decided without a human (decision other than review).",
            ["policy_version"],
            namespace=namespace,
            registry=registry,
        ),
        labeler_pairs=Gauge(
            "quality_labeler_pairs",
            "Pairs of labels by different labelers on the same content revision.",
            namespace=namespace,
            registry=registry,
        ),
        labeler_agreement=Gauge(
            "quality_labeler_agreement_ratio",
            "Share of labeler pairs that agree on whether the category applies.",
            ["category"],
            namespace=namespace,
            registry=registry,
        ),
        labeler_exact_agreement=Gauge(
            "quality_labeler_exact_agreement_ratio",
            "Share of labeler pairs that name exactly the same categories.",
            namespace=namespace,
            registry=registry,
        ),
        shadow_compared=Gauge(
            "quality_shadow_compared",
            "Content revisions with both a live verdict and this shadow policy's verdict.",
            ["policy_version"],
            namespace=namespace,
            registry=registry,
        ),
        shadow_agreement=Gauge(
            "quality_shadow_agreement_ratio",
            "Share of those revisions where the shadow decision equals the live one.",
            ["policy_version"],
            namespace=namespace,
            registry=registry,
        ),
        human_verdicts=Gauge(
            "quality_human_verdicts",
            "Final (human) verdicts read back from the verdict topic, by policy version, source and "
            "whether they overturned the automated decision.",
            ["policy_version", "source", "overturned"],
            namespace=namespace,
            registry=registry,
        ),
        figures_updated=Gauge(
            "quality_figures_updated_timestamp_seconds",
            "When the store-derived gauges were last checked to be current with the store (Unix time).",
            namespace=namespace,
            registry=registry,
        ),
        appeals=Counter(
            "appeals",
            "Appeal verdicts published, by outcome: stands, to_human (the re-evaluation differs), "
            "content_unavailable, error (inference failed).",
            ["outcome"],
            namespace=namespace,
            registry=registry,
        ),
    )
    for outcome in APPEAL_OUTCOMES:
        metrics.appeals.labels(outcome=outcome)
    for topic in consumed_topics:
        metrics.records_consumed.labels(topic=topic)
    for reason in get_args(DeadLetterReason):
        metrics.dead_letters.labels(reason=reason)
    for source in get_args(LabelSource):
        metrics.labels.labels(source=source)
        if source != "qa_audit":
            metrics.final_verdicts_published.labels(source=source)
    return metrics
