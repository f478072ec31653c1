"""Labels joined with verdicts: scored pairs, labeler agreement, final verdicts. Pure: no I/O.

Every label of a content revision is paired with every automated verdict of that revision
(one per policy version and mode), whichever arrived first. A pair's weight is the audit
weight (1 / sampling probability) when the label comes from a QA audit of a sampled item,
else 1. Verdicts decided by an inference error are not scored (they name no categories
because nothing was measured) but counted; human final verdicts are never scored.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import combinations

from streamproc.accuracy import Confusion, confusion_by_category, violation_confusion
from streamproc.errors import DecodeError
from streamproc.schemas import (
    ContentType,
    DecidedBy,
    Decision,
    HumanDecision,
    LabelEvent,
    Latencies,
    SourceRef,
    Verdict,
    VerdictMode,
)

__all__ = [
    "HUMAN_APPROVED",
    "HUMAN_REJECTED",
    "Accuracy",
    "Agreement",
    "JoinLabel",
    "JoinVerdict",
    "LabeledItem",
    "MissingDecision",
    "Pair",
    "TrainingLabel",
    "accuracy",
    "check_label",
    "final_idempotency_key",
    "final_verdict",
    "labeler_agreement",
    "lean",
    "pair_weight",
    "pairs",
    "settles",
]

HUMAN_APPROVED = "HUMAN_APPROVED"
HUMAN_REJECTED = "HUMAN_REJECTED"
_MESSAGES: dict[Decision, str] = {
    "approve": "A reviewer checked your content and approved it.",
    "reject": "A reviewer checked your content and found that it breaks our policies.",
}


class MissingDecision(DecodeError):
    """A review or appeal outcome without an approve or reject decision."""

    kind = "missing_decision"


@dataclass(frozen=True)
class JoinVerdict:
    """What the join needs of one automated verdict."""

    policy_version: str
    mode: VerdictMode
    decision: Decision
    flagged: frozenset[str]
    #: Categories the verdict's policy scored (empty when a rule or an error decided).
    categories: frozenset[str]
    decided_by: str
    #: 1 / probability if an audit sample of this verdict was seen.
    audit_weight: float | None = None


@dataclass(frozen=True)
class JoinLabel:
    """What the join needs of one label."""

    label_id: str
    labeler_id: str
    source: str
    true_categories: frozenset[str]


@dataclass(frozen=True)
class LabeledItem:
    """One content revision: its labels and automated verdicts."""

    labels: tuple[JoinLabel, ...]
    verdicts: tuple[JoinVerdict, ...]
    #: The audit weight of the revision (of its first sampled live verdict), if it was sampled.
    audit_weight: float | None = None


@dataclass(frozen=True)
class TrainingLabel:
    content_type: ContentType
    content_id: str
    revision: int
    true_categories: tuple[str, ...]
    #: Who labeled it last: review, audit or appeal.
    label_source: str
    #: Where the worker read the content (its live verdict's source).
    content: SourceRef


@dataclass(frozen=True)
class Pair:
    """One (label, verdict) join, ready to be scored."""

    policy_version: str
    mode: VerdictMode
    truth: frozenset[str]
    predicted: frozenset[str]
    weight: float
    #: The verdict's decision: flagged (review or reject) or not, for the violation figures.
    decision: Decision
    #: Categories the pair speaks about: scored by the policy, flagged or labelled.
    categories: frozenset[str]


def pair_weight(label: JoinLabel, verdict: JoinVerdict, item_weight: float | None) -> float:
    """The audit weight for a QA-audit label of a sampled item, else 1.

    A live verdict uses its own sample's weight; a shadow verdict uses the revision's (the
    item was drawn through its live verdict, so that is its inclusion probability).
    """
    if label.source != "qa_audit":
        return 1.0
    weight = verdict.audit_weight if verdict.mode == "live" else item_weight
    return weight if weight is not None else 1.0


def pairs(item: LabeledItem) -> tuple[list[Pair], list[tuple[str, VerdictMode]]]:
    """Scored pairs of one revision, and the (policy version, mode) of each pair left out.

    Pairs with a verdict decided by an inference error are left out; human verdicts are
    not in ``item.verdicts`` at all.
    """
    scored: list[Pair] = []
    excluded: list[tuple[str, VerdictMode]] = []
    for label in item.labels:
        for verdict in item.verdicts:
            if verdict.decided_by == "human":
                continue
            if verdict.decided_by == "error":
                excluded.append((verdict.policy_version, verdict.mode))
                continue
            scored.append(
                Pair(
                    policy_version=verdict.policy_version,
                    mode=verdict.mode,
                    truth=label.true_categories,
                    predicted=verdict.flagged,
                    weight=pair_weight(label, verdict, item.audit_weight),
                    decision=verdict.decision,
                    categories=verdict.categories | verdict.flagged | label.true_categories,
                )
            )
    return scored, excluded


@dataclass
class Accuracy:
    """Scores of one policy version in one mode."""

    confusion: dict[str, Confusion]
    pairs: int = 0
    excluded: int = 0
    #: Violates any category (the label) against flagged (the verdict's decision), weighted.
    violation: Confusion = field(default_factory=Confusion)


def accuracy(items: Iterable[LabeledItem]) -> dict[tuple[str, VerdictMode], Accuracy]:
    """Confusion counts per category, and violating against flagged, for every (policy
    version, mode) with labelled verdicts; the same weighted pairs feed both.

    The categories of a policy version are those its verdicts scored or flagged and those
    its pairs' labels named.
    """
    grouped: dict[tuple[str, VerdictMode], list[Pair]] = defaultdict(list)
    excluded: dict[tuple[str, VerdictMode], int] = defaultdict(int)
    for item in items:
        scored, left_out = pairs(item)
        for pair in scored:
            grouped[(pair.policy_version, pair.mode)].append(pair)
        for key in left_out:
            excluded[key] += 1
    result: dict[tuple[str, VerdictMode], Accuracy] = {}
    for key in grouped.keys() | excluded.keys():
        group = grouped.get(key, [])
        categories = sorted(set().union(*(p.categories for p in group)))
        confusion = confusion_by_category(((p.truth, p.predicted, p.weight) for p in group), categories)
        result[key] = Accuracy(
            confusion=confusion,
            pairs=len(group),
            excluded=excluded.get(key, 0),
            violation=violation_confusion((p.truth, p.decision, p.weight) for p in group),
        )
    return result


@dataclass
class Agreement:
    """How often two labelers of the same revision agree."""

    pairs: int = 0
    exact: int = 0
    #: Agreeing pairs per category.
    per_category: dict[str, int] = field(default_factory=dict)

    @property
    def exact_ratio(self) -> float:
        """Share of labeler pairs naming exactly the same categories (0 without pairs)."""
        return self.exact / self.pairs if self.pairs else 0.0

    def ratio(self, category: str) -> float:
        """Share of labeler pairs agreeing on whether ``category`` applies (0 without pairs)."""
        return self.per_category.get(category, 0) / self.pairs if self.pairs else 0.0


def labeler_agreement(items: Iterable[Sequence[JoinLabel]]) -> Agreement:
    """Agreement over every pair of labels by different labelers on the same revision.

    The categories are those any label of a revision with such a pair names; a pair agrees
    on a category when both or neither of its labels name it.
    """
    label_pairs: list[tuple[JoinLabel, JoinLabel]] = []
    for labels in items:
        label_pairs.extend((a, b) for a, b in combinations(labels, 2) if a.labeler_id != b.labeler_id)
    categories = sorted({c for pair in label_pairs for label in pair for c in label.true_categories})
    agreement = Agreement(per_category=dict.fromkeys(categories, 0))
    for a, b in label_pairs:
        agreement.pairs += 1
        agreement.exact += a.true_categories == b.true_categories
        for category in categories:
            agreement.per_category[category] += (category in a.true_categories) == (
                category in b.true_categories
            )
    return agreement


def settles(label: LabelEvent) -> bool:
    """Whether the label is a review or appeal outcome that settles the item."""
    return label.source in ("review", "appeal") and label.decision in ("approve", "reject")


def check_label(label: LabelEvent) -> None:
    """Raise MissingDecision for a review or appeal outcome that names no approve or reject."""
    if label.source != "qa_audit" and label.decision not in ("approve", "reject"):
        raise MissingDecision(
            f"label {label.label_id} is a {label.source} outcome with decision {label.decision!r}; "
            "review and appeal outcomes must decide approve or reject"
        )


def lean(decision: Decision, flagged: Iterable[str]) -> Decision:
    """Where the automation leaned: its decision, or for a review, reject if it flagged anything."""
    if decision != "review":
        return decision
    return "reject" if any(True for _ in flagged) else "approve"


def final_idempotency_key(original_key: str, label_id: str) -> str:
    return f"{original_key}:human:{label_id}"


def final_verdict(original: Verdict, label: LabelEvent, *, source: SourceRef, now: datetime) -> Verdict:
    """The final verdict a review or appeal outcome makes of the automated live verdict.

    Scores, policy version and model are the original's; the decision, the flagged
    categories (the label's true categories on reject, none on approve) and the reason code
    (HUMAN_APPROVED or HUMAN_REJECTED) are the human's.
    """
    if not settles(label) or label.decision is None:
        raise ValueError(f"label {label.label_id} does not settle an item")
    if original.kind != "automated":
        raise ValueError(f"{original.idempotency_key} is not an automated live verdict")
    decision: Decision = label.decision
    created_at = original.produced_at.timestamp() - original.latency.end_to_end_seconds
    return Verdict(
        mode="live",
        kind="final",
        content_type=original.content_type,
        content_id=original.content_id,
        revision=original.revision,
        decision=decision,
        scores=original.scores,
        flagged_categories=sorted(label.true_categories) if decision == "reject" else [],
        decided_by=DecidedBy(kind="human", id=label.labeler_id),
        reason_code=HUMAN_REJECTED if decision == "reject" else HUMAN_APPROVED,
        seller_message=_MESSAGES[decision],
        seller_message_locale="en",  # the human-decision messages are English only
        policy_version=original.policy_version,
        model=original.model,
        latency=Latencies(processing_seconds=0.0, end_to_end_seconds=now.timestamp() - created_at),
        human=HumanDecision(
            source=label.source,
            labeler_id=label.labeler_id,
            label_id=label.label_id,
            original_decision=original.decision,
            original_idempotency_key=original.idempotency_key,
            overturned=decision != lean(original.decision, original.flagged_categories),
        ),
        idempotency_key=final_idempotency_key(original.idempotency_key, label.label_id),
        source=source,
        produced_at=now,
    )
