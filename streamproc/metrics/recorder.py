"""What each part reports, as protocols: every part takes the recorder it needs.

A part is handed the narrowest protocol it uses (the pipeline a ``PipelineRecorder``, the
model client an ``InferenceRecorder``, the decision path a ``DecisionRecorder``), so it can
be used with ``NOOP`` where nothing is exported (offline evaluation, shadow evaluations,
the quality service's pipeline) instead of ``if metrics is not None`` at every call.
The Prometheus implementations are in streamproc.metrics.prometheus.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Literal, Protocol

__all__ = [
    "NOOP",
    "DecisionRecorder",
    "Figures",
    "InferenceRecorder",
    "NoopRecorder",
    "PipelineRecorder",
    "PolicyRecorder",
    "QualityRecorder",
    "WorkerRecorder",
]

#: Store-derived gauge values: metric name (without namespace) → label values → value.
#: Every labelled series of a named metric that is absent is removed (pruned data).
Figures = Mapping[str, Mapping[tuple[str, ...], float]]


class PipelineRecorder(Protocol):
    """The Kafka pipeline: window, pauses, commits, rebalances."""

    def items_in_flight(self, count: int) -> None: ...
    def consumption_paused(self, paused: bool) -> None: ...
    def offset_commit(self, *, ok: bool) -> None: ...
    def rebalance(self, event: Literal["assigned", "revoked"]) -> None: ...
    def consumer_lag(self, topic: str, partition: int, records: int) -> None:
        """Records behind the partition's end (high watermark minus the next fetch offset)."""

    def consumer_lag_removed(self, topic: str, partition: int) -> None:
        """The partition is no longer assigned: drop its series."""


class InferenceRecorder(Protocol):
    """The model client: requests, latency, errors, retries, its limit and circuit."""

    def watch_model(
        self,
        *,
        concurrency_limit: Callable[[], float],
        prompts_in_flight: Callable[[], float],
        circuit_open: Callable[[], bool],
    ) -> None:
        """Read the adaptive limit, the prompts it counts and the circuit state at each scrape."""

    def model_request_in_flight(self) -> AbstractContextManager[object]: ...
    def model_request_latency(self, seconds: float) -> None: ...
    def inference_error(self, kind: str) -> None: ...
    def inference_retry(self) -> None: ...


class DecisionRecorder(Protocol):
    """The decision path: rule matches, model cost per item, unreadable answers."""

    def pre_rule_matched(self, rule_id: str, *, requests_saved: int) -> None: ...
    def post_rule_matched(self, rule_id: str) -> None: ...
    def rule_failed(self, stage: str, rule_id: str) -> None: ...
    def model_requests(self, scorer: str, count: int) -> None: ...
    def model_tokens(self, scorer: str, *, prompt: int, cached: int, completion: int) -> None: ...
    def inference_error(self, kind: str) -> None: ...
    def cascaded(self, policy: str, *, requests: int) -> None:
        """An item went to the cascade's second model with ``requests`` requests."""


class PolicyRecorder(Protocol):
    """Which packs are served, and reloads."""

    def policies_served(self, live: Mapping[str, str], shadows: Sequence[str]) -> None:
        """``live``: pack name → version being served; ``shadows``: names of shadow packs."""

    def policy_reload(self, *, applied: bool) -> None: ...


class WorkerRecorder(PipelineRecorder, InferenceRecorder, DecisionRecorder, PolicyRecorder, Protocol):
    """Everything ``streamproc worker`` exports."""

    def event_consumed(self, topic: str) -> None: ...
    def dead_letter(self, reason: str) -> None: ...
    def verdict(
        self,
        content_type: str,
        decision: str,
        category: str,
        *,
        end_to_end_seconds: float,
        processing_seconds: float,
    ) -> None: ...
    def clock_skew(self) -> None:
        """An event's created_at was later than the worker's clock at its verdict."""

    def audit_sampled(self, decision: str) -> None: ...
    def shadow_verdict(self, policy: str, decision: str, *, agreed: bool) -> None: ...
    def shadow_failed(self, policy: str) -> None: ...


class QualityRecorder(Protocol):
    """Everything ``streamproc quality`` exports."""

    def record_consumed(self, topic: str) -> None: ...
    def dead_letter(self, reason: str) -> None: ...
    def final_verdict_published(self, source: str) -> None: ...
    def appeal(self, outcome: str) -> None: ...
    def figures(self, values: Figures) -> None:
        """Set the store-derived gauges to ``values``; series not in it are removed."""

    def figures_checked(self) -> None:
        """The figures were just found current with the store."""


class NoopRecorder:
    """Records nothing: for callers that export no metrics. Satisfies every protocol above."""

    def items_in_flight(self, count: int) -> None:
        pass

    def consumption_paused(self, paused: bool) -> None:
        pass

    def offset_commit(self, *, ok: bool) -> None:
        pass

    def rebalance(self, event: Literal["assigned", "revoked"]) -> None:
        pass

    def consumer_lag(self, topic: str, partition: int, records: int) -> None:
        pass

    def consumer_lag_removed(self, topic: str, partition: int) -> None:
        pass

    def watch_model(
        self,
        *,
        concurrency_limit: Callable[[], float],
        prompts_in_flight: Callable[[], float],
        circuit_open: Callable[[], bool],
    ) -> None:
        pass

    def model_request_in_flight(self) -> AbstractContextManager[object]:
        return contextlib.nullcontext()

    def model_request_latency(self, seconds: float) -> None:
        pass

    def inference_error(self, kind: str) -> None:
        pass

    def inference_retry(self) -> None:
        pass

    def pre_rule_matched(self, rule_id: str, *, requests_saved: int) -> None:
        pass

    def post_rule_matched(self, rule_id: str) -> None:
        pass

    def rule_failed(self, stage: str, rule_id: str) -> None:
        pass

    def model_requests(self, scorer: str, count: int) -> None:
        pass

    def model_tokens(self, scorer: str, *, prompt: int, cached: int, completion: int) -> None:
        pass

    def cascaded(self, policy: str, *, requests: int) -> None:
        pass

    def policies_served(self, live: Mapping[str, str], shadows: Sequence[str]) -> None:
        pass

    def policy_reload(self, *, applied: bool) -> None:
        pass

    def event_consumed(self, topic: str) -> None:
        pass

    def dead_letter(self, reason: str) -> None:
        pass

    def verdict(
        self,
        content_type: str,
        decision: str,
        category: str,
        *,
        end_to_end_seconds: float,
        processing_seconds: float,
    ) -> None:
        pass

    def clock_skew(self) -> None:
        pass

    def audit_sampled(self, decision: str) -> None:
        pass

    def shadow_verdict(self, policy: str, decision: str, *, agreed: bool) -> None:
        pass

    def shadow_failed(self, policy: str) -> None:
        pass

    def record_consumed(self, topic: str) -> None:
        pass

    def final_verdict_published(self, source: str) -> None:
        pass

    def appeal(self, outcome: str) -> None:
        pass

    def figures(self, values: Figures) -> None:
        pass

    def figures_checked(self) -> None:
        pass


#: The shared no-op recorder.
NOOP = NoopRecorder()
