"""Thresholds and rules to an outcome: which decision, decided by what, with which reason.

Pure: no Kafka, HTTP or clock reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from streamproc.policy import Category, Policy
from streamproc.schemas import DecidedBy, Decision

__all__ = [
    "INFERENCE_ERROR_MESSAGE",
    "INFERENCE_ERROR_REASON",
    "NO_VIOLATION_REASON",
    "Outcome",
    "decide",
    "decide_by_rule",
    "decide_on_error",
    "decide_on_rule_error",
]

NO_VIOLATION_REASON = "NO_VIOLATION"
INFERENCE_ERROR_REASON = "INFERENCE_ERROR"
INFERENCE_ERROR_MESSAGE = "Your content is waiting for a manual review."
RULE_ERROR_REASON = "RULE_ERROR"

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


def decide_on_rule_error(rule_id: str) -> Outcome:
    """Fail closed: a rule that raised on the item might have matched it, so the item goes to
    human review, never approve; ``decided_by`` names the rule."""
    return Outcome(
        "review", DecidedBy(kind="error", id=f"rule:{rule_id}"), RULE_ERROR_REASON, INFERENCE_ERROR_MESSAGE
    )
