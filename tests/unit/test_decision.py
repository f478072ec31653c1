from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streamproc.decision import (
    Outcome,
    build_verdict,
    decide,
    decide_by_rule,
    decide_on_error,
    flagged_categories,
    idempotency_key,
)
from streamproc.policy import Thresholds
from streamproc.schemas import SourceRef, Verdict
from tests.factories import decided_verdict, default_policy, listing

POLICY = default_policy("listing").with_thresholds(
    {c: Thresholds(reject=0.8, review=0.5) for c in default_policy("listing").category_ids}
)


@pytest.mark.parametrize(
    ("score", "decision"),
    [
        (0.0, "approve"),
        (0.4999, "approve"),
        (0.5, "review"),
        (0.7999, "review"),
        (0.8, "reject"),
        (1.0, "reject"),
    ],
)
def test_threshold_boundaries(score: float, decision: str) -> None:
    assert decide(POLICY, {"spam": score}).decision == decision


def test_approve_names_no_category() -> None:
    outcome = decide(POLICY, {"spam": 0.1, "adult": 0.2})
    assert (outcome.decision, outcome.decided_by.kind, outcome.reason_code) == (
        "approve",
        "none",
        "NO_VIOLATION",
    )


def test_most_severe_decision_wins_over_higher_score() -> None:
    # review on adult with 0.79 is less severe than reject on spam with 0.8
    lenient = POLICY.with_thresholds({"adult": Thresholds(reject=0.95, review=0.5)})
    outcome = decide(lenient, {"adult": 0.9, "spam": 0.8})
    assert outcome.decision == "reject" and outcome.decided_by.id == "spam"
    assert outcome.reason_code == "SPAM" and "spam" in outcome.seller_message


def test_among_equals_highest_score_then_policy_order() -> None:
    assert decide(POLICY, {"adult": 0.6, "spam": 0.7}).decided_by.id == "spam"
    assert decide(POLICY, {"adult": 0.6, "spam": 0.6}).decided_by.id == "adult"


def test_errors_are_never_approved() -> None:
    outcome = decide_on_error("timeout")
    assert outcome.decision == "review"
    assert (outcome.decided_by.kind, outcome.decided_by.id, outcome.reason_code) == (
        "error",
        "timeout",
        "INFERENCE_ERROR",
    )


def test_verdict_carries_everything_enforcement_needs() -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    event = listing(listing_id="L-7", revision=2, created_at=created.isoformat())
    now = created + timedelta(seconds=3)
    verdict = build_verdict(
        event=event,
        policy=POLICY,
        outcome=decide(POLICY, {"counterfeit": 0.9}),
        scores={"counterfeit": 0.9},
        model="m",
        source=SourceRef(topic="t", partition=1, offset=5),
        usage=None,
        inference_seconds=0.2,
        processing_seconds=0.3,
        now=now,
    )
    assert verdict.decision == "reject" and verdict.reason_code == "COUNTERFEIT"
    assert (
        verdict.idempotency_key == f"listing:L-7:2:{POLICY.version}" == idempotency_key(event, POLICY.version)
    )
    assert verdict.latency.end_to_end_seconds == 3.0
    assert (verdict.content_type, verdict.content_id, verdict.revision) == ("listing", "L-7", 2)


def test_flagged_categories_are_those_at_or_above_review_in_policy_order() -> None:
    policy = POLICY
    ids = [c.id for c in policy.categories]
    scores = {ids[2]: 0.99, ids[0]: policy.categories[0].thresholds.review, ids[1]: 0.01}
    outcome = decide(policy, scores)
    assert flagged_categories(policy, outcome, scores) == [ids[0], ids[2]]


def test_nothing_is_flagged_on_approval_or_error() -> None:
    policy = POLICY
    scores = {c.id: 0.99 for c in policy.categories}
    assert flagged_categories(policy, decide_on_error("timeout"), scores) == []
    allowed = decide_by_rule("trusted", "approve", "TRUSTED", "", policy, None)
    assert flagged_categories(policy, allowed, scores) == []


def test_a_rule_flags_the_category_it_names() -> None:
    policy = POLICY
    category = policy.categories[1].id
    outcome = decide_by_rule("blocked-terms", "reject", "BLOCKED", "", policy, category)
    assert flagged_categories(policy, outcome, {}) == [category]
    verdict_less = decide_by_rule("no-category", "review", "CHECK", "", policy, None)
    assert flagged_categories(policy, verdict_less, {}) == []


def _review_verdict(
    scores: dict[str, float], *, audience: int | None = None, outcome: Outcome | None = None
) -> Verdict:
    return decided_verdict(POLICY, scores, outcome=outcome, now=NOW, audience=audience)


NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_review_ticket_priority_is_risk_times_reach_due_within_the_pack_sla() -> None:
    verdict = _review_verdict({"counterfeit": 0.6, "spam": 0.3}, audience=250)
    assert verdict.review is not None
    assert (verdict.review.risk, verdict.review.reach) == (0.6, 250)
    assert verdict.review.priority == pytest.approx(150.0)
    assert (
        verdict.review.deadline == NOW + timedelta(hours=POLICY.review_sla_hours) == NOW + timedelta(hours=24)
    )


@pytest.mark.parametrize("audience", [None, 0, 1])
def test_reach_is_at_least_one(audience: int | None) -> None:
    verdict = _review_verdict({"counterfeit": 0.6}, audience=audience)
    assert verdict.review is not None and verdict.review.reach == 1 and verdict.review.priority == 0.6


def test_the_shortest_sla_of_the_flagged_categories_applies() -> None:
    # The shipped pack gives prohibited items 4 hours; counterfeit has none (the pack's 24).
    verdict = _review_verdict({"counterfeit": 0.7, "prohibited_items": 0.55})
    assert verdict.flagged_categories == ["counterfeit", "prohibited_items"]
    assert verdict.review is not None and verdict.review.deadline == NOW + timedelta(hours=4)


def test_without_scores_risk_is_one_and_the_pack_sla_applies() -> None:
    error = _review_verdict({}, audience=10, outcome=decide_on_error("timeout"))
    assert error.review is not None
    assert (error.review.risk, error.review.priority) == (1.0, 10.0)
    assert error.review.deadline == NOW + timedelta(hours=24)
    # A pre-model rule that names a category: its SLA, risk 1 (no scores to go by).
    rule = decide_by_rule("r", "review", "PROHIBITED_ITEM", "", POLICY, "prohibited_items")
    by_rule = _review_verdict({}, outcome=rule)
    assert by_rule.review is not None and by_rule.review.risk == 1.0
    assert by_rule.review.deadline == NOW + timedelta(hours=4)


def test_only_review_verdicts_carry_a_ticket() -> None:
    assert _review_verdict({"counterfeit": 0.1}).review is None
    assert _review_verdict({"counterfeit": 0.9}).review is None
