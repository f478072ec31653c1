"""Every metric streamproc exports, declared once: the recorders and the docs' tables read this.

Names carry base units (``_seconds``, ``_ratio``; counters get ``_total`` on export); label
sets are small and fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "APPEAL_OUTCOMES",
    "DEFAULT_NAMESPACE",
    "QUALITY_METRICS",
    "WORKER_METRICS",
    "MetricKind",
    "MetricSpec",
    "Service",
    "metrics_reference",
]

DEFAULT_NAMESPACE = "streamproc"
#: The ``outcome`` label of ``appeals_total`` (see streamproc.quality.appeals.AppealResult).
APPEAL_OUTCOMES: Final = ("stands", "to_human", "content_unavailable", "error")

MetricKind = Literal["counter", "gauge", "histogram"]
#: How a gauge's values from several worker processes of one pod add up (prometheus-client's
#: multiprocess modes; ``live*`` drops a process's values when it exits).
GaugeMode = Literal["all", "livesum", "livemax", "livemostrecent"]
Service = Literal["worker", "quality"]

# The default buckets stop at 10 s; end-to-end latency includes queueing in Kafka,
# which can reach minutes under backlog.
_E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_COUNT_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its name without the namespace, type, help text, labels and buckets."""

    name: str
    kind: MetricKind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None
    multiprocess_mode: GaugeMode = "all"

    def exported_name(self, namespace: str = DEFAULT_NAMESPACE) -> str:
        """The name a scrape shows (histograms show it with ``_bucket``, ``_sum``, ``_count``)."""
        suffix = "_total" if self.kind == "counter" else ""
        return f"{namespace}_{self.name}{suffix}"


WORKER_METRICS: Final[tuple[MetricSpec, ...]] = (
    MetricSpec("events_consumed", "counter", "Input records received, by topic.", labels=("topic",)),
    MetricSpec(
        "verdicts",
        "counter",
        "Verdicts produced, by content type, decision and deciding category.",
        labels=("content_type", "decision", "category"),
    ),
    MetricSpec(
        "dead_letters",
        "counter",
        "Input records sent to the dead-letter topic, by reason.",
        labels=("reason",),
    ),
    MetricSpec(
        "end_to_end_latency_seconds",
        "histogram",
        "From the event's created_at to its verdict being produced.",
        labels=("content_type",),
        buckets=_E2E_BUCKETS,
    ),
    MetricSpec(
        "clock_skew",
        "counter",
        "Events stamped (created_at) later than the worker's clock when their verdict was produced: "
        "the producer's clock is ahead; their end-to-end latency counts as 0.",
    ),
    MetricSpec(
        "processing_latency_seconds",
        "histogram",
        "From the worker receiving an event to its verdict being produced.",
        labels=("content_type",),
        buckets=_E2E_BUCKETS,
    ),
    MetricSpec(
        "model_request_latency_seconds",
        "histogram",
        "Duration of one HTTP request to the model server, failures included.",
    ),
    MetricSpec(
        "model_requests_in_flight",
        "gauge",
        "Requests to the model server awaiting an answer.",
        multiprocess_mode="livesum",
    ),
    MetricSpec(
        "model_prompts_in_flight",
        "gauge",
        "Prompts in requests awaiting an answer, as the adaptive limit counts them.",
        multiprocess_mode="livesum",
    ),
    MetricSpec(
        "model_concurrency_limit",
        "gauge",
        "Prompts the adaptive limit currently allows in flight (a request carrying several counts each).",
        multiprocess_mode="livesum",
    ),
    MetricSpec(
        "model_circuit_open",
        "gauge",
        "1 while the circuit breaker leaves the model server alone after repeated failures.",
        multiprocess_mode="livemax",
    ),
    MetricSpec(
        "items_in_flight",
        "gauge",
        "Input records taken from Kafka whose outputs are not yet acknowledged.",
        multiprocess_mode="livesum",
    ),
    MetricSpec(
        "consumption_paused",
        "gauge",
        "1 while the worker has paused fetching (window full or model server unavailable).",
        multiprocess_mode="livemax",
    ),
    MetricSpec(
        "consumer_lag_records",
        "gauge",
        "Records behind the partition's end for each assigned partition: high watermark minus the "
        "next offset this consumer will fetch (fetched, uncommitted records are in items_in_flight).",
        labels=("topic", "partition"),
        multiprocess_mode="livemostrecent",
    ),
    MetricSpec("offset_commits", "counter", "Offset commits, by result (ok or failed).", labels=("result",)),
    MetricSpec(
        "rebalances",
        "counter",
        "Partition assignment changes, by event (assigned or revoked).",
        labels=("event",),
    ),
    MetricSpec(
        "inference_errors",
        "counter",
        "Failed model requests, by kind (each attempt counts).",
        labels=("kind",),
    ),
    MetricSpec("inference_retries", "counter", "Model requests retried after a retriable failure."),
    MetricSpec("prompt_tokens", "counter", "Prompt tokens the model server reported."),
    MetricSpec(
        "cached_prompt_tokens",
        "counter",
        "Prompt tokens the model server reported as served from its prefix cache.",
    ),
    MetricSpec(
        "model_requests_per_item",
        "histogram",
        "Model requests one item needed, by scorer.",
        labels=("scorer",),
        buckets=_COUNT_BUCKETS,
    ),
    MetricSpec(
        "completion_tokens_per_item",
        "histogram",
        "Tokens the model generated for one item, by scorer.",
        labels=("scorer",),
        buckets=_COUNT_BUCKETS,
    ),
    MetricSpec(
        "rule_matches",
        "counter",
        "Items decided or overridden by a policy rule, by stage and rule.",
        labels=("stage", "rule"),
    ),
    MetricSpec(
        "rule_errors",
        "counter",
        "Rule evaluations that raised on an item, by stage and rule; the item was not approved (review).",
        labels=("stage", "rule"),
    ),
    MetricSpec(
        "model_calls_saved", "counter", "Model requests not sent because a pre-model rule decided the item."
    ),
    MetricSpec(
        "cascaded_items",
        "counter",
        "Items whose scores fell in their pack's cascade band and went to the second model, by pack.",
        labels=("policy",),
    ),
    MetricSpec(
        "cascade_requests",
        "counter",
        "Requests sent to the cascade's second model (the cascade's extra cost), by pack.",
        labels=("policy",),
    ),
    MetricSpec(
        "policy_reloads",
        "counter",
        "Policy pack reloads, by result (applied or rejected).",
        labels=("result",),
    ),
    MetricSpec(
        "policy_info",
        "gauge",
        "1 for each policy pack version being served.",
        labels=("name", "version"),
        multiprocess_mode="livemax",
    ),
    MetricSpec(
        "audit_samples",
        "counter",
        "Live verdicts sent to the audit topic, by decision.",
        labels=("decision",),
    ),
    MetricSpec(
        "shadow_verdicts",
        "counter",
        "Verdicts of shadow (candidate) packs, by pack name and decision; never enforced.",
        labels=("policy", "decision"),
    ),
    MetricSpec(
        "shadow_agreement",
        "counter",
        "Shadow verdicts by whether their decision equals the live decision (agreed: true or false).",
        labels=("policy", "agreed"),
    ),
    MetricSpec(
        "shadow_failures",
        "counter",
        "Shadow evaluations that failed with an error (the live verdict is unaffected), by pack name.",
        labels=("policy",),
    ),
)
QUALITY_METRICS: Final[tuple[MetricSpec, ...]] = (
    MetricSpec(
        "quality_records_consumed",
        "counter",
        "Records the quality service received, by topic.",
        labels=("topic",),
    ),
    MetricSpec(
        "quality_dead_letters",
        "counter",
        "Records the quality service sent to the dead-letter topic, by reason.",
        labels=("reason",),
    ),
    MetricSpec(
        "quality_final_verdicts_published",
        "counter",
        "Final verdicts published from review and appeal outcomes, by label source.",
        labels=("source",),
    ),
    MetricSpec("quality_store_items", "gauge", "Content revisions held in the join store."),
    MetricSpec("quality_labels", "gauge", "Labels held in the join store, by source.", labels=("source",)),
    MetricSpec(
        "quality_verdicts",
        "gauge",
        "Automated verdicts held in the join store, by policy version, mode and decision.",
        labels=("policy_version", "mode", "decision"),
    ),
    MetricSpec(
        "quality_pairs",
        "gauge",
        "(label, verdict) pairs scored, unweighted.",
        labels=("policy_version", "mode"),
    ),
    MetricSpec(
        "quality_pairs_excluded",
        "gauge",
        "(label, verdict) pairs not scored, by reason (inference_error).",
        labels=("policy_version", "mode", "reason"),
    ),
    MetricSpec(
        "quality_confusion",
        "gauge",
        "Weighted (label, verdict) pairs per category and outcome (tp, fp, fn, tn).",
        labels=("policy_version", "mode", "category", "outcome"),
    ),
    MetricSpec(
        "quality_precision_ratio",
        "gauge",
        "tp / (tp + fp) per category, weighted; 0 when nothing was flagged.",
        labels=("policy_version", "mode", "category"),
    ),
    MetricSpec(
        "quality_recall_ratio",
        "gauge",
        "tp / (tp + fn) per category, weighted; 0 when nothing truly applies.",
        labels=("policy_version", "mode", "category"),
    ),
    MetricSpec(
        "quality_f1_ratio",
        "gauge",
        "Harmonic mean of precision and recall per category, weighted.",
        labels=("policy_version", "mode", "category"),
    ),
    MetricSpec(
        "quality_violation_confusion",
        "gauge",
        "Weighted (label, verdict) pairs by outcome (tp, fp, fn, tn) of: the label names any "
        "category (violating) against the decision is review or reject (flagged).",
        labels=("policy_version", "mode", "outcome"),
    ),
    MetricSpec(
        "quality_violation_precision_ratio",
        "gauge",
        "Share of flagged verdicts (review or reject) whose item violates any category, weighted.",
        labels=("policy_version", "mode"),
    ),
    MetricSpec(
        "quality_violation_recall_ratio",
        "gauge",
        "Share of items violating any category that were flagged (review or reject), weighted.",
        labels=("policy_version", "mode"),
    ),
    MetricSpec(
        "quality_violation_f1_ratio",
        "gauge",
        "Harmonic mean of the violation precision and recall, weighted.",
        labels=("policy_version", "mode"),
    ),
    MetricSpec(
        "quality_automation_ratio",
        "gauge",
        "Share of live verdicts decided without a human (decision other than review).",
        labels=("policy_version",),
    ),
    MetricSpec(
        "quality_labeler_pairs",
        "gauge",
        "Pairs of labels by different labelers on the same content revision.",
    ),
    MetricSpec(
        "quality_labeler_agreement_ratio",
        "gauge",
        "Share of labeler pairs that agree on whether the category applies.",
        labels=("category",),
    ),
    MetricSpec(
        "quality_labeler_exact_agreement_ratio",
        "gauge",
        "Share of labeler pairs that name exactly the same categories.",
    ),
    MetricSpec(
        "quality_shadow_compared",
        "gauge",
        "Content revisions with both a live verdict and this shadow policy's verdict.",
        labels=("policy_version",),
    ),
    MetricSpec(
        "quality_shadow_agreement_ratio",
        "gauge",
        "Share of those revisions where the shadow decision equals the live one.",
        labels=("policy_version",),
    ),
    MetricSpec(
        "quality_human_verdicts",
        "gauge",
        "Final (human) verdicts read back from the verdict topic, by policy version, source and "
        "whether they overturned the automated decision.",
        labels=("policy_version", "source", "overturned"),
    ),
    MetricSpec(
        "quality_figures_updated_timestamp_seconds",
        "gauge",
        "When the store-derived gauges were last checked to be current with the store (Unix time).",
    ),
    MetricSpec(
        "appeals",
        "counter",
        "Appeal verdicts published, by outcome: stands, to_human (the re-evaluation differs), "
        "content_unavailable, error (inference failed).",
        labels=("outcome",),
    ),
)


def metrics_reference(service: Service, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The metrics of ``service`` as a markdown table (kept in docs/operations.md by a test)."""
    specs = WORKER_METRICS if service == "worker" else QUALITY_METRICS
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for spec in specs:
        labels = ", ".join(spec.labels)
        rows.append(f"| `{spec.exported_name(namespace)}` | {spec.kind} | {labels} | {spec.help} |")
    return "\n".join(rows)
