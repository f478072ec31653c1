"""From scores to a verdict. Pure: no Kafka, HTTP or clock reads (time is passed in)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from streamproc.policy import Category, Policy
from streamproc.schemas import (
    ContentEvent,
    DecidedBy,
    Decision,
    Latencies,
    ListingEvent,
    ReviewTicket,
    SourceRef,
    TokenUsage,
    Verdict,
    VerdictMode,
)

__all__ = [
    "INFERENCE_ERROR_MESSAGE",
    "INFERENCE_ERROR_REASON",
    "NO_VIOLATION_REASON",
    "Outcome",
    "build_verdict",
    "content_ref",
    "decide",
    "decide_by_rule",
    "decide_on_error",
    "flagged_categories",
    "idempotency_key",
    "review_ticket",
]

NO_VIOLATION_REASON = "NO_VIOLATION"
INFERENCE_ERROR_REASON = "INFERENCE_ERROR"
INFERENCE_ERROR_MESSAGE = "Your content is waiting for a manual review."

_SEVERITY: Mapping[Decision, int] = {"approve": 0, "review": 1, "reject": 2}


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    decided_by: DecidedBy
    reason_code: str
    seller_message: str
    #: The category a rule named, if the outcome is a rule's.
    rule_category: str | None = None


def _category_decision(category: Category, score: float) -> Decision:
    if score >= category.thresholds.reject:
        return "reject"
    if score >= category.thresholds.review:
        return "review"
    return "approve"


def decide(policy: Policy, scores: Mapping[str, float]) -> Outcome:
    """The most severe per-category decision wins; among equals, the highest score.

    Ties on score go to the category listed first in the policy.
    """
    best: tuple[int, float, int] | None = None
    winner: Category | None = None
    for index, category in enumerate(policy.categories):
        score = scores.get(category.id, 0.0)
        decision = _category_decision(category, score)
        if decision == "approve":
            continue
        rank = (_SEVERITY[decision], score, -index)
        if best is None or rank > best:
            best, winner = rank, category
    if winner is None or best is None:
        return Outcome("approve", DecidedBy(kind="none"), NO_VIOLATION_REASON, "")
    decision = "reject" if best[0] == _SEVERITY["reject"] else "review"
    return Outcome(
        decision, DecidedBy(kind="category", id=winner.id), winner.reason_code, winner.seller_message
    )


def decide_by_rule(
    rule_id: str,
    decision: Decision,
    reason_code: str,
    seller_message: str,
    policy: Policy,
    category: str | None,
) -> Outcome:
    """A rule's decision; its message defaults to its category's."""
    if not seller_message and category is not None:
        seller_message = next((c.seller_message for c in policy.categories if c.id == category), "")
    return Outcome(decision, DecidedBy(kind="rule", id=rule_id), reason_code, seller_message, category)


def decide_on_error(error_kind: str) -> Outcome:
    """Fail closed: an item the model could not score goes to human review, never approve."""
    return Outcome(
        "review", DecidedBy(kind="error", id=error_kind), INFERENCE_ERROR_REASON, INFERENCE_ERROR_MESSAGE
    )


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


def content_ref(event: ContentEvent) -> tuple[str, str]:
    """(content_type, content_id) of an event."""
    if isinstance(event, ListingEvent):
        return "listing", event.listing_id
    return "video", event.video_id


def idempotency_key(event: ContentEvent, policy_version: str) -> str:
    content_type, content_id = content_ref(event)
    return f"{content_type}:{content_id}:{event.revision}:{policy_version}"


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
) -> Verdict:
    """The verdict record; a ``review`` decision carries its review ticket."""
    content_type, content_id = content_ref(event)
    flagged = flagged_categories(policy, outcome, scores)
    return Verdict(
        mode=mode,
        content_type=content_type,
        content_id=content_id,
        revision=event.revision,
        decision=outcome.decision,
        scores=dict(scores),
        flagged_categories=flagged,
        decided_by=outcome.decided_by,
        reason_code=outcome.reason_code,
        seller_message=outcome.seller_message,
        policy_version=policy.version,
        model=model,
        latency=Latencies(
            inference_seconds=inference_seconds,
            processing_seconds=processing_seconds,
            end_to_end_seconds=(now - event.created_at).total_seconds(),
        ),
        usage=usage,
        review=review_ticket(policy, event, scores, flagged, now) if outcome.decision == "review" else None,
        idempotency_key=idempotency_key(event, policy.version),
        source=source,
        produced_at=now,
    )
