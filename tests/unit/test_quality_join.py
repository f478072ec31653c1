"""The join's pure logic: pairs, weights, agreement, overturned and final verdicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streamproc.quality.join import (
    HUMAN_APPROVED,
    HUMAN_REJECTED,
    JoinLabel,
    JoinVerdict,
    LabeledItem,
    MissingDecision,
    accuracy,
    check_label,
    final_verdict,
    labeler_agreement,
    lean,
    pair_weight,
    pairs,
    settles,
)
from streamproc.schemas import DecidedBy, LabelEvent, Latencies, SourceRef, Verdict
from tests.sklearn_reference import sklearn_per_category, sklearn_violation

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CATEGORIES = ("counterfeit", "spam", "adult")


def verdict(**overrides: Any) -> Verdict:
    data: dict[str, Any] = {
        "content_type": "listing",
        "content_id": "L-1",
        "revision": 0,
        "decision": "approve",
        "scores": dict.fromkeys(CATEGORIES, 0.1),
        "flagged_categories": [],
        "decided_by": DecidedBy(kind="none"),
        "reason_code": "NO_VIOLATION",
        "seller_message": "ok",
        "policy_version": "listings@1",
        "model": "m",
        "latency": Latencies(processing_seconds=0.1, end_to_end_seconds=2.0),
        "idempotency_key": "listing:L-1:0:listings@1",
        "source": SourceRef(topic="content.listings.v1", partition=0, offset=1),
        "produced_at": NOW,
    }
    data.update(overrides)
    return Verdict(**data)


def label(**overrides: Any) -> LabelEvent:
    data: dict[str, Any] = {
        "label_id": "lab-1",
        "content_type": "listing",
        "content_id": "L-1",
        "revision": 0,
        "true_categories": [],
        "labeler_id": "ann",
        "source": "qa_audit",
        "created_at": NOW,
    }
    data.update(overrides)
    return LabelEvent(**data)


def jv(flagged: set[str] = frozenset(), **overrides: Any) -> JoinVerdict:  # type: ignore[assignment]
    data: dict[str, Any] = {
        "policy_version": "listings@1",
        "mode": "live",
        "decision": "reject" if flagged else "approve",
        "flagged": frozenset(flagged),
        "categories": frozenset(CATEGORIES),
        "decided_by": "category",
    }
    data.update(overrides)
    return JoinVerdict(**data)


def jl(truth: set[str] = frozenset(), **overrides: Any) -> JoinLabel:  # type: ignore[assignment]
    data: dict[str, Any] = {"label_id": "lab", "labeler_id": "ann", "source": "qa_audit"}
    data.update(overrides)
    return JoinLabel(true_categories=frozenset(truth), **data)


def test_every_label_pairs_with_every_automated_verdict_of_its_revision() -> None:
    item = LabeledItem(
        labels=(jl({"spam"}, label_id="a"), jl(set(), label_id="b", labeler_id="bob")),
        verdicts=(jv({"spam"}), jv(set(), policy_version="listings@2"), jv(mode="shadow")),
    )
    scored, excluded = pairs(item)
    assert len(scored) == 6 and not excluded
    assert {(p.policy_version, p.mode, p.truth, p.predicted) for p in scored} == {
        ("listings@1", "live", frozenset({"spam"}), frozenset({"spam"})),
        ("listings@1", "live", frozenset(), frozenset({"spam"})),
        ("listings@2", "live", frozenset({"spam"}), frozenset()),
        ("listings@2", "live", frozenset(), frozenset()),
        ("listings@1", "shadow", frozenset({"spam"}), frozenset()),
        ("listings@1", "shadow", frozenset(), frozenset()),
    }


def test_error_verdicts_are_counted_apart_and_human_ones_never_scored() -> None:
    item = LabeledItem(
        labels=(jl({"spam"}),),
        verdicts=(jv(decided_by="error", decision="review"), jv({"spam"}, decided_by="human")),
    )
    scored, excluded = pairs(item)
    assert scored == [] and excluded == [("listings@1", "live")]
    result = accuracy([item])
    assert result[("listings@1", "live")].pairs == 0 and result[("listings@1", "live")].excluded == 1


@pytest.mark.parametrize(
    ("source", "mode", "verdict_weight", "item_weight", "expected"),
    [
        ("qa_audit", "live", 8.0, 8.0, 8.0),  # a sampled live verdict weighs its sample's weight
        ("qa_audit", "live", None, None, 1.0),  # not sampled
        ("review", "live", 8.0, 8.0, 1.0),  # only QA audits are weighted
        ("appeal", "live", 8.0, 8.0, 1.0),
        ("qa_audit", "shadow", None, 5.0, 5.0),  # a shadow verdict weighs the revision's sample
        ("qa_audit", "shadow", None, None, 1.0),
    ],
)
def test_pair_weight(
    source: str, mode: str, verdict_weight: float | None, item_weight: float | None, expected: float
) -> None:
    assert pair_weight(jl(source=source), jv(mode=mode, audit_weight=verdict_weight), item_weight) == expected


def test_accuracy_matches_scikit_learn_with_weights() -> None:
    cases = [
        ({"spam"}, {"spam"}, 4.0),
        ({"spam", "adult"}, {"spam"}, 1.0),
        (set(), {"counterfeit"}, 2.0),
        ({"counterfeit"}, set(), 1.0),
        (set(), set(), 10.0),
        ({"adult"}, {"adult", "spam"}, 1.0),
    ]
    items = [
        LabeledItem(labels=(jl(truth),), verdicts=(jv(predicted, audit_weight=weight),), audit_weight=weight)
        for truth, predicted, weight in cases
    ]
    result = accuracy(items)[("listings@1", "live")]
    assert result.pairs == len(cases) and sorted(result.confusion) == sorted(CATEGORIES)
    categories = sorted(CATEGORIES)
    reference = sklearn_per_category(
        [t for t, _, _ in cases], [p for _, p, _ in cases], [w for _, _, w in cases], categories
    )
    for category in categories:
        confusion = result.confusion[category]
        tn, fp, fn, tp, precision, recall, f1 = reference[category]
        assert (confusion.tp, confusion.fp, confusion.fn, confusion.tn) == (tp, fp, fn, tn)
        assert confusion.precision == pytest.approx(precision)
        assert confusion.recall == pytest.approx(recall)
        assert confusion.f1 == pytest.approx(f1)


def test_violation_matches_scikit_learn_with_the_same_weights() -> None:
    """Violating (any true category) against flagged (decision review or reject), from the
    same weighted pairs as the categories'."""
    cases = [  # truth, decision, flagged categories, audit weight
        ({"spam"}, "reject", {"spam"}, 4.0),
        ({"adult"}, "review", {"spam"}, 1.0),  # flagged, under another category: caught all the same
        ({"counterfeit"}, "review", set(), 8.0),  # a rule naming no category: caught
        (set(), "review", set(), 2.0),  # the same on a clean item: a false alarm
        ({"counterfeit"}, "approve", set(), 1.0),
        (set(), "approve", set(), 10.0),
    ]
    items = [
        LabeledItem(
            labels=(jl(truth),),
            verdicts=(jv(flagged, decision=decision, audit_weight=weight),),
            audit_weight=weight,
        )
        for truth, decision, flagged, weight in cases
    ]
    error = LabeledItem(labels=(jl({"spam"}),), verdicts=(jv(decided_by="error", decision="review"),))
    result = accuracy([*items, error])[("listings@1", "live")]
    tn, fp, fn, tp, precision, recall, f1 = sklearn_violation(
        [t for t, _, _, _ in cases], [d for _, d, _, _ in cases], [w for _, _, _, w in cases]
    )
    v = result.violation
    assert (v.tp, v.fp, v.fn, v.tn) == (tp, fp, fn, tn) == (13, 2, 1, 10)
    assert (v.precision, v.recall, v.f1) == pytest.approx((precision, recall, f1))
    assert result.excluded == 1  # the error verdict is in neither figure


def test_categories_are_those_scored_flagged_or_labelled() -> None:
    item = LabeledItem(labels=(jl({"weapons"}),), verdicts=(jv({"spam"}, categories=frozenset()),))
    assert sorted(accuracy([item])[("listings@1", "live")].confusion) == ["spam", "weapons"]


def test_labeler_agreement_counts_pairs_of_different_labelers() -> None:
    items = [
        # two labelers agree exactly
        (jl({"spam"}, labeler_id="ann"), jl({"spam"}, labeler_id="bob")),
        # three labels, one labeler twice: pairs ann-bob and bob-ann(2), not ann-ann
        (
            jl({"spam", "adult"}, labeler_id="ann"),
            jl({"spam"}, labeler_id="bob"),
            jl(set(), labeler_id="ann"),
        ),
        # one label: no pair
        (jl({"counterfeit"}, labeler_id="cat"),),
    ]
    agreement = labeler_agreement(items)
    assert agreement.pairs == 3
    assert agreement.exact == 1 and agreement.exact_ratio == pytest.approx(1 / 3)
    # spam: agree, agree, disagree; adult: agree, disagree, agree
    assert agreement.ratio("spam") == pytest.approx(2 / 3)
    assert agreement.ratio("adult") == pytest.approx(2 / 3)
    assert "counterfeit" not in agreement.per_category  # named only on an item without a pair


def test_no_labeler_pairs_gives_zero_ratios() -> None:
    agreement = labeler_agreement([(jl({"spam"}),)])
    assert agreement.pairs == 0 and agreement.exact_ratio == 0.0 and agreement.ratio("spam") == 0.0


@pytest.mark.parametrize(
    ("decision", "flagged", "expected"),
    [
        ("approve", [], "approve"),
        ("reject", ["spam"], "reject"),
        ("reject", [], "reject"),  # a rule without a category
        ("review", ["spam"], "reject"),
        ("review", [], "approve"),  # e.g. an inference error or a rule without a category
    ],
)
def test_lean(decision: str, flagged: list[str], expected: str) -> None:
    assert lean(decision, flagged) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("original", "flagged", "human", "overturned"),
    [
        ("approve", [], "approve", False),
        ("approve", [], "reject", True),
        ("reject", ["spam"], "reject", False),
        ("reject", ["spam"], "approve", True),
        ("review", ["spam"], "reject", False),
        ("review", ["spam"], "approve", True),
        ("review", [], "approve", False),
        ("review", [], "reject", True),
    ],
)
def test_final_verdict_overturned(original: str, flagged: list[str], human: str, overturned: bool) -> None:
    live = verdict(decision=original, flagged_categories=flagged)
    outcome = label(source="review", decision=human, true_categories=["spam"] if human == "reject" else [])
    final = final_verdict(live, outcome, source=SourceRef(topic="labels", partition=0, offset=3), now=NOW)
    assert final.human is not None and final.human.overturned is overturned


def test_final_verdict_fields() -> None:
    live = verdict(decision="review", flagged_categories=["spam"], scores={"spam": 0.6})
    outcome = label(
        label_id="lab-9",
        source="appeal",
        decision="reject",
        labeler_id="rev-7",
        true_categories=["spam", "adult"],
    )
    read_from = SourceRef(topic="labels", partition=2, offset=40)
    now = NOW + timedelta(hours=1)
    final = final_verdict(live, outcome, source=read_from, now=now)
    assert final.kind == "final" and final.decided_by == DecidedBy(kind="human", id="rev-7")
    assert final.decision == "reject" and final.reason_code == HUMAN_REJECTED
    assert final.flagged_categories == ["adult", "spam"]
    assert final.idempotency_key == "listing:L-1:0:listings@1:human:lab-9"
    assert (final.scores, final.policy_version, final.model, final.mode) == (
        {"spam": 0.6},
        "listings@1",
        "m",
        "live",
    )
    assert final.source == read_from and final.produced_at == now
    assert final.latency.end_to_end_seconds == pytest.approx(3600 + 2.0)  # from the event's created_at
    assert final.human is not None
    assert final.human.model_dump() == {
        "source": "appeal",
        "labeler_id": "rev-7",
        "label_id": "lab-9",
        "original_decision": "review",
        "original_idempotency_key": "listing:L-1:0:listings@1",
        "overturned": False,
    }
    approved = final_verdict(live, label(source="review", decision="approve"), source=read_from, now=now)
    assert approved.reason_code == HUMAN_APPROVED and approved.flagged_categories == []


def test_final_verdict_needs_a_settling_label_and_an_automated_live_verdict() -> None:
    ref = SourceRef(topic="labels", partition=0, offset=0)
    with pytest.raises(ValueError, match="does not settle"):
        final_verdict(verdict(), label(source="qa_audit", decision="reject"), source=ref, now=NOW)
    shadow = verdict(mode="shadow")
    with pytest.raises(ValueError, match="not an automated live verdict"):
        final_verdict(shadow, label(source="review", decision="reject"), source=ref, now=NOW)
    final = final_verdict(verdict(), label(source="review", decision="reject"), source=ref, now=NOW)
    with pytest.raises(ValueError, match="not an automated live verdict"):
        final_verdict(final, label(source="review", decision="reject"), source=ref, now=NOW)


@pytest.mark.parametrize(
    ("source", "decision", "ok", "settling"),
    [
        ("qa_audit", None, True, False),
        ("qa_audit", "reject", True, False),
        ("review", "approve", True, True),
        ("appeal", "reject", True, True),
        ("review", None, False, False),
        ("appeal", "review", False, False),
    ],
)
def test_check_label_and_settles(source: str, decision: str | None, ok: bool, settling: bool) -> None:
    event = label(source=source, decision=decision)
    assert settles(event) is settling
    if ok:
        check_label(event)
    else:
        with pytest.raises(MissingDecision, match="must decide approve or reject"):
            check_label(event)
