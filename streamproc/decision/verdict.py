"""The verdict record: flagged categories, review ticket, idempotency key. Pure (time is passed in)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from streamproc.decision.explain import explain
from streamproc.decision.thresholds import Outcome
from streamproc.policy import Policy
from streamproc.schemas import (
    ContentEvent,
    Explanation,
    Latencies,
    ReviewTicket,
    SourceRef,
    TokenUsage,
    Verdict,
    VerdictMode,
)

__all__ = [
    "build_verdict",
    "flagged_categories",
    "idempotency_key",
    "review_ticket",
]


def flagged_categories(policy: Policy, outcome: Outcome, scores: Mapping[str, float]) -> list[str]:
    """Categories the verdict holds violated, in policy order; none for approvals and errors.

    A category is flagged when its score reaches its review threshold, or when the deciding
    rule names it.
    """
    if outcome.decision == "approve" or outcome.decided_by.kind == "error":
        return []
    return [
        c.id
        for c in policy.categories
        if scores.get(c.id, 0.0) >= c.thresholds.review or c.id == outcome.rule_category
    ]


def review_ticket(
    policy: Policy, event: ContentEvent, scores: Mapping[str, float], flagged: Sequence[str], now: datetime
) -> ReviewTicket:
    """Where a review goes in the human queue: priority = risk * reach, due within the SLA.

    risk is the highest category score, or 1 when there are none (inference failed, or a
    pre-model rule decided without the model); reach is the event's audience, at least 1.
    The SLA is the shortest among the flagged categories', else the pack's.
    """
    risk = max(scores.values(), default=1.0)
    reach = float(max(1, event.audience or 1))
    return ReviewTicket(
        priority=risk * reach,
        risk=risk,
        reach=reach,
        deadline=now + timedelta(hours=policy.review_sla(flagged)),
    )


def idempotency_key(event: ContentEvent, policy_version: str) -> str:
    return f"{event.content_type}:{event.content_id}:{event.revision}:{policy_version}"


def build_verdict(
    *,
    event: ContentEvent,
    policy: Policy,
    outcome: Outcome,
    scores: Mapping[str, float],
    model: str,
    source: SourceRef,
    usage: TokenUsage | None,
    inference_seconds: float | None,
    processing_seconds: float,
    now: datetime,
    mode: VerdictMode = "live",
    clipped: Sequence[str] = (),
    explanation: Explanation | None = None,
) -> Verdict:
    """The verdict record; a ``review`` decision carries its review ticket. ``clipped``: the
    item's fields the model did not read in full. ``explanation``: what decided it, with the
    decision path's windows and rule match (decide_verdict); by default, from the scores alone."""
    flagged = flagged_categories(policy, outcome, scores)
    message = outcome.localized.choose(event.locale)
    return Verdict(
        mode=mode,
        kind="shadow" if mode == "shadow" else "automated",
        content_type=event.content_type,
        content_id=event.content_id,
        revision=event.revision,
        decision=outcome.decision,
        scores=dict(scores),
        flagged_categories=flagged,
        decided_by=outcome.decided_by,
        clipped_fields=list(clipped),
        reason_code=outcome.reason_code,
        seller_message=message.text,
        seller_message_locale=message.locale,
        seller_message_fallback=message.fallback,
        policy_version=policy.version,
        model=model,
        latency=Latencies(
            inference_seconds=inference_seconds,
            processing_seconds=processing_seconds,
            # 0 for an event stamped later than ``now``: the producer's clock is ahead of ours
            # (the worker counts these, see streamproc_clock_skew_total)
            end_to_end_seconds=max(0.0, (now - event.created_at).total_seconds()),
        ),
        usage=usage,
        review=review_ticket(policy, event, scores, flagged, now) if outcome.decision == "review" else None,
        explanation=explanation if explanation is not None else explain(policy, outcome, scores),
        idempotency_key=idempotency_key(event, policy.version),
        source=source,
        produced_at=now,
    )
