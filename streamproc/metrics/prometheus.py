"""The Prometheus recorders: the catalog's metrics registered on an injected registry.

Label values known up front are pre-initialised so that dashboards show zeros, not gaps.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Generic, Literal, TypeVar, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from streamproc.metrics.catalog import (
    APPEAL_OUTCOMES,
    DEFAULT_NAMESPACE,
    QUALITY_METRICS,
    WORKER_METRICS,
    MetricSpec,
)
from streamproc.metrics.recorder import Figures
from streamproc.schemas.dead_letter import DeadLetterReason
from streamproc.schemas.verdict import LabelSource

__all__ = ["PrometheusQualityMetrics", "PrometheusWorkerMetrics", "create", "create_quality"]

_M = TypeVar("_M", bound=MetricWrapperBase)
_DECISIONS = ("approve", "reject", "review")
_INFERENCE_ERROR_KINDS = (
    "unavailable",
    "timeout",
    "server_error",
    "request_error",
    "protocol_error",
    "circuit_open",
)


class _Registered:
    """The catalog's metrics of one service, created on a registry, looked up by name and type."""

    def __init__(self, specs: Iterable[MetricSpec], registry: CollectorRegistry, namespace: str) -> None:
        self.by_name: dict[str, MetricWrapperBase] = {}
        for spec in specs:
            kind = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}[spec.kind]
            extra: dict[str, object] = {"buckets": spec.buckets} if spec.buckets is not None else {}
            if spec.kind == "gauge":
                extra["multiprocess_mode"] = spec.multiprocess_mode
            self.by_name[spec.name] = kind(
                spec.name, spec.help, spec.labels, namespace=namespace, registry=registry, **extra
            )

    def counter(self, name: str) -> Counter:
        return self._typed(name, Counter)

    def gauge(self, name: str) -> Gauge:
        return self._typed(name, Gauge)

    def histogram(self, name: str) -> Histogram:
        return self._typed(name, Histogram)

    def _typed(self, name: str, kind: type[_M]) -> _M:
        metric = self.by_name[name]
        if not isinstance(metric, kind):
            raise TypeError(f"metric {name} is a {type(metric).__name__}, not a {kind.__name__}")
        return metric


def _multiprocess_mode() -> bool:
    """Whether prometheus-client writes this process's values to files for a parent process to
    serve (``PROMETHEUS_MULTIPROC_DIR``, set by the worker's supervisor before its children
    start). There, ``set_function``, ``remove`` and ``clear`` do not reach the files."""
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ or "prometheus_multiproc_dir" in os.environ


#: In multiprocess mode, how often watched gauges are copied into their files.
_WATCH_INTERVAL_SECONDS = 1.0


class _Children(Generic[_M]):
    """A labelled metric's children by label values (in the catalog's label order), looked up
    in a plain dict: ``labels()`` validates its arguments and takes a lock on every call,
    which cost more than the update itself on the worker's per-item path."""

    __slots__ = ("_by_values", "_metric")

    def __init__(self, metric: _M) -> None:
        self._metric = metric
        self._by_values: dict[tuple[str, ...], _M] = {}

    def __call__(self, *values: str) -> _M:
        child = self._by_values.get(values)
        if child is None:
            child = self._by_values[values] = self._metric.labels(*values)
        return child


class PrometheusWorkerMetrics:
    """The worker's recorder (``WorkerRecorder``) on a Prometheus registry."""

    def __init__(
        self,
        registry: CollectorRegistry,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        consumed_topics: Sequence[str] = (),
        categories: Sequence[str] = (),
    ) -> None:
        self.registry = registry
        self._multiprocess = _multiprocess_mode()
        self._served: set[tuple[str, str]] = set()
        m = _Registered(WORKER_METRICS, registry, namespace)
        self._consumed = m.counter("events_consumed")
        self._verdicts = m.counter("verdicts")
        self._dead_letters = m.counter("dead_letters")
        self._end_to_end = m.histogram("end_to_end_latency_seconds")
        self._processing = m.histogram("processing_latency_seconds")
        self._clock_skew = m.counter("clock_skew")
        self._request_latency = m.histogram("model_request_latency_seconds")
        self._requests_in_flight = m.gauge("model_requests_in_flight")
        self._prompts = m.gauge("model_prompts_in_flight")
        self._limit = m.gauge("model_concurrency_limit")
        self._circuit = m.gauge("model_circuit_open")
        self._items = m.gauge("items_in_flight")
        self._paused = m.gauge("consumption_paused")
        self._lag = m.gauge("consumer_lag_records")
        self._commits = m.counter("offset_commits")
        self._rebalances = m.counter("rebalances")
        self._errors = m.counter("inference_errors")
        self._retries = m.counter("inference_retries")
        self._prompt_tokens = m.counter("prompt_tokens")
        self._cached_tokens = m.counter("cached_prompt_tokens")
        self._requests_per_item = m.histogram("model_requests_per_item")
        self._completion_per_item = m.histogram("completion_tokens_per_item")
        self._rule_matches = m.counter("rule_matches")
        self._rule_errors = m.counter("rule_errors")
        self._calls_saved = m.counter("model_calls_saved")
        self._cascaded = m.counter("cascaded_items")
        self._cascade_requests = m.counter("cascade_requests")
        self._reloads = m.counter("policy_reloads")
        self._policy_info = m.gauge("policy_info")
        self._audit = m.counter("audit_samples")
        self._shadow_verdicts = m.counter("shadow_verdicts")
        self._shadow_agreement = m.counter("shadow_agreement")
        self._shadow_failures = m.counter("shadow_failures")
        # the series updated for every item (never removed, so their children can be kept)
        self._consumed_by = _Children(self._consumed)
        self._verdicts_by = _Children(self._verdicts)
        self._end_to_end_by = _Children(self._end_to_end)
        self._processing_by = _Children(self._processing)
        self._requests_per_item_by = _Children(self._requests_per_item)
        self._completion_per_item_by = _Children(self._completion_per_item)
        self._rule_matches_by = _Children(self._rule_matches)
        self._preset(consumed_topics, categories)

    def _preset(self, consumed_topics: Sequence[str], categories: Sequence[str]) -> None:
        for decision in _DECISIONS:
            self._audit.labels(decision=decision)
        for result in ("applied", "rejected"):
            self._reloads.labels(result=result)
        for topic in consumed_topics:
            self._consumed.labels(topic=topic)
        for reason in get_args(DeadLetterReason):
            self._dead_letters.labels(reason=reason)
        for result in ("ok", "failed"):
            self._commits.labels(result=result)
        for event in ("assigned", "revoked"):
            self._rebalances.labels(event=event)
        for kind in _INFERENCE_ERROR_KINDS:
            self._errors.labels(kind=kind)
        for content_type in ("listing", "video"):
            self._end_to_end.labels(content_type=content_type)
            self._processing.labels(content_type=content_type)
            for decision in _DECISIONS:
                for category in (*categories, "none", "inference_error", "rule"):
                    self._verdicts.labels(content_type=content_type, decision=decision, category=category)

    # pipeline
    def items_in_flight(self, count: int) -> None:
        self._items.set(count)

    def consumption_paused(self, paused: bool) -> None:
        self._paused.set(1 if paused else 0)

    def offset_commit(self, *, ok: bool) -> None:
        self._commits.labels(result="ok" if ok else "failed").inc()

    def rebalance(self, event: Literal["assigned", "revoked"]) -> None:
        self._rebalances.labels(event=event).inc()

    def consumer_lag(self, topic: str, partition: int, records: int) -> None:
        self._lag.labels(topic=topic, partition=str(partition)).set(records)

    def consumer_lag_removed(self, topic: str, partition: int) -> None:
        if self._multiprocess:  # a removed series would keep its last value in the file
            self._lag.labels(topic=topic, partition=str(partition)).set(0)
            return
        with contextlib.suppress(KeyError):  # never set
            self._lag.remove(topic, str(partition))

    # model client
    def watch_model(
        self,
        *,
        concurrency_limit: Callable[[], float],
        prompts_in_flight: Callable[[], float],
        circuit_open: Callable[[], bool],
    ) -> None:
        watched = [(self._limit, concurrency_limit), (self._prompts, prompts_in_flight)]
        watched.append((self._circuit, lambda: 1.0 if circuit_open() else 0.0))
        if not self._multiprocess:
            for gauge, read in watched:
                gauge.set_function(read)
            return

        # A function is only called by a scrape of this process's registry, which the
        # supervisor's scrape never reaches: copy the values into the files instead.
        def copy() -> None:
            while True:
                for gauge, read in watched:
                    gauge.set(read())
                time.sleep(_WATCH_INTERVAL_SECONDS)

        threading.Thread(target=copy, name="watch-model-gauges", daemon=True).start()

    def model_request_in_flight(self) -> AbstractContextManager[object]:
        return self._requests_in_flight.track_inprogress()

    def model_request_latency(self, seconds: float) -> None:
        self._request_latency.observe(seconds)

    def inference_error(self, kind: str) -> None:
        self._errors.labels(kind=kind).inc()

    def inference_retry(self) -> None:
        self._retries.inc()

    # decision path
    def pre_rule_matched(self, rule_id: str, *, requests_saved: int) -> None:
        self._rule_matches_by("pre", rule_id).inc()
        self._calls_saved.inc(requests_saved)

    def post_rule_matched(self, rule_id: str) -> None:
        self._rule_matches_by("post", rule_id).inc()

    def rule_failed(self, stage: str, rule_id: str) -> None:
        self._rule_errors.labels(stage=stage, rule=rule_id).inc()

    def model_requests(self, scorer: str, count: int) -> None:
        self._requests_per_item_by(scorer).observe(count)

    def model_tokens(self, scorer: str, *, prompt: int, cached: int, completion: int) -> None:
        self._prompt_tokens.inc(prompt)
        self._cached_tokens.inc(cached)
        self._completion_per_item_by(scorer).observe(completion)

    def cascaded(self, policy: str, *, requests: int) -> None:
        self._cascaded.labels(policy=policy).inc()
        self._cascade_requests.labels(policy=policy).inc(requests)

    # packs
    def policies_served(self, live: Mapping[str, str], shadows: Sequence[str]) -> None:
        if self._multiprocess:  # cleared series would keep their 1 in the file
            for name, version in self._served - set(live.items()):
                self._policy_info.labels(name=name, version=version).set(0)
        else:
            self._policy_info.clear()
        self._served = set(live.items())
        for name, version in live.items():
            self._policy_info.labels(name=name, version=version).set(1)
            self._cascaded.labels(policy=name)  # at zero from the start, as rate() needs
            self._cascade_requests.labels(policy=name)
        for name in shadows:  # their series start at zero
            for decision in _DECISIONS:
                self._shadow_verdicts.labels(policy=name, decision=decision)
            for agreed in ("true", "false"):
                self._shadow_agreement.labels(policy=name, agreed=agreed)
            self._shadow_failures.labels(policy=name)

    def policy_reload(self, *, applied: bool) -> None:
        self._reloads.labels(result="applied" if applied else "rejected").inc()

    # items
    def event_consumed(self, topic: str) -> None:
        self._consumed_by(topic).inc()

    def dead_letter(self, reason: str) -> None:
        self._dead_letters.labels(reason=reason).inc()

    def verdict(
        self,
        content_type: str,
        decision: str,
        category: str,
        *,
        end_to_end_seconds: float,
        processing_seconds: float,
    ) -> None:
        self._verdicts_by(content_type, decision, category).inc()
        self._end_to_end_by(content_type).observe(end_to_end_seconds)
        self._processing_by(content_type).observe(processing_seconds)

    def clock_skew(self) -> None:
        self._clock_skew.inc()

    def audit_sampled(self, decision: str) -> None:
        self._audit.labels(decision=decision).inc()

    def shadow_verdict(self, policy: str, decision: str, *, agreed: bool) -> None:
        self._shadow_verdicts.labels(policy=policy, decision=decision).inc()
        self._shadow_agreement.labels(policy=policy, agreed="true" if agreed else "false").inc()

    def shadow_failed(self, policy: str) -> None:
        self._shadow_failures.labels(policy=policy).inc()


class PrometheusQualityMetrics:
    """The quality service's recorder (``QualityRecorder``) on a Prometheus registry.

    The counters count this process's work; the gauges are set from the join store, so
    they survive a restart and cover what the store holds (its retention and size bound).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        consumed_topics: Sequence[str] = (),
    ) -> None:
        self.registry = registry
        m = self._metrics = _Registered(QUALITY_METRICS, registry, namespace)
        self._consumed = m.counter("quality_records_consumed")
        self._dead_letters = m.counter("quality_dead_letters")
        self._finals = m.counter("quality_final_verdicts_published")
        self._appeals = m.counter("appeals")
        self._updated = m.gauge("quality_figures_updated_timestamp_seconds")
        for outcome in APPEAL_OUTCOMES:
            self._appeals.labels(outcome=outcome)
        for topic in consumed_topics:
            self._consumed.labels(topic=topic)
        for reason in get_args(DeadLetterReason):
            self._dead_letters.labels(reason=reason)
        labels = m.gauge("quality_labels")
        for source in get_args(LabelSource):
            labels.labels(source=source)
            if source != "qa_audit":
                self._finals.labels(source=source)

    def record_consumed(self, topic: str) -> None:
        self._consumed.labels(topic=topic).inc()

    def dead_letter(self, reason: str) -> None:
        self._dead_letters.labels(reason=reason).inc()

    def final_verdict_published(self, source: str) -> None:
        self._finals.labels(source=source).inc()

    def appeal(self, outcome: str) -> None:
        self._appeals.labels(outcome=outcome).inc()

    def figures(self, values: Figures) -> None:
        # Values are set in place, never cleared first, so a scrape meanwhile sees old or
        # new values, not gaps; series not set this time are removed afterwards.
        for name, series in values.items():
            gauge = self._metrics.gauge(name)
            for labels, value in series.items():
                (gauge.labels(*labels) if labels else gauge).set(value)
            if gauge._labelnames:
                held = {tuple(s.labels.values()) for family in gauge.collect() for s in family.samples}
                for labels in held - set(series):
                    gauge.remove(*labels)

    def figures_checked(self) -> None:
        self._updated.set_to_current_time()


def create(
    registry: CollectorRegistry,
    namespace: str = DEFAULT_NAMESPACE,
    *,
    consumed_topics: Sequence[str] = (),
    categories: Sequence[str] = (),
) -> PrometheusWorkerMetrics:
    """The worker's metrics on ``registry``; label values given here start at zero."""
    return PrometheusWorkerMetrics(
        registry, namespace, consumed_topics=consumed_topics, categories=categories
    )


def create_quality(
    registry: CollectorRegistry, namespace: str = DEFAULT_NAMESPACE, *, consumed_topics: Sequence[str] = ()
) -> PrometheusQualityMetrics:
    """The quality service's metrics on ``registry``."""
    return PrometheusQualityMetrics(registry, namespace, consumed_topics=consumed_topics)
