"""The replay report as typed data: ``report.json`` and ``sweep.json`` field for field.

Everything but ``run`` and ``generated_at`` follows from the replayed records and the live
verdicts alone, so a replay resumed after a crash ends with the same report as one that ran
through.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict

from streamproc.evaluation.report.model import ConfusionFigures
from streamproc.schemas import ContentType, DecidedBy, Decision

__all__ = [
    "CategoryRate",
    "CategoryScores",
    "Change",
    "LabeledReport",
    "PackReport",
    "ReplayCost",
    "ReplayReport",
    "RetentionGap",
    "RunFigures",
    "SweepReport",
    "SweepSet",
    "VerdictBrief",
    "deterministic",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VerdictBrief(_Frozen):
    """What a verdict decided, and by what."""

    decision: Decision
    flagged: tuple[str, ...]
    decided_by: DecidedBy
    reason_code: str
    policy_version: str
    scores: dict[str, float]


class Change(_Frozen):
    """An item the candidate decided otherwise than its live verdict (decision or categories)."""

    pack: str
    content_type: ContentType
    content_id: str
    revision: int
    topic: str
    partition: int
    offset: int
    timestamp: AwareDatetime
    live: VerdictBrief
    candidate: VerdictBrief


class CategoryRate(_Frozen):
    """Share of the items with a live verdict that each side flagged with the category."""

    category: str
    live: float
    candidate: float
    live_count: int
    candidate_count: int


class ReplayCost(_Frozen):
    """Model requests and tokens: the candidate's in this replay; the live verdicts' as they record it."""

    requests: int
    prompt_tokens: int
    completion_tokens: int
    second_model_requests: int
    requests_per_item: float
    prompt_tokens_per_item: float
    live_prompt_tokens: int
    live_completion_tokens: int


class CategoryScores(_Frozen):
    """One category as its own binary problem: the verdict names it, the label holds it."""

    category: str
    live: ConfusionFigures
    candidate: ConfusionFigures


class LabeledReport(_Frozen):
    """The live verdicts and the candidate against labels, over the same labeled items.

    Violation figures as ``streamproc eval``'s: an item violates when its label names any
    category, and is flagged when its decision is review or reject.
    """

    #: Replayed items with a label, replayed items without one, and labels of the pack's
    #: content type that match no item the pack replayed.
    labeled: int
    unlabeled: int
    labels_unmatched: int
    #: Labeled items left out: no live verdict, or a side decided by an error (an item with
    #: errors on both sides counts in both).
    without_live_verdict: int
    live_errors: int
    candidate_errors: int
    #: Items the figures cover, and how many of them violate.
    compared: int
    violating: int
    live: ConfusionFigures
    candidate: ConfusionFigures
    categories: tuple[CategoryScores, ...]


class PackReport(_Frozen):
    """One candidate pack against the live verdicts of the items it decided."""

    pack: str
    version: str
    content_type: ContentType
    #: Revisions replayed (a revision published twice counts once: ``duplicates``).
    items: int
    duplicates: int
    with_live_verdict: int
    #: Counted, never dropped: items whose live verdict is not in the verdict window.
    without_live_verdict: int
    #: Items the candidate could not score (inference errors): reviews, as in the worker.
    candidate_errors: int
    live_policy_versions: dict[str, int]
    #: live decision → candidate decision → items, over the items with a live verdict.
    decisions: dict[Decision, dict[Decision, int]]
    changed: int
    #: Share not sent to review, over the items with a live verdict.
    live_automation_rate: float
    candidate_automation_rate: float
    #: The candidate's automation rate over every replayed item.
    candidate_automation_rate_all: float
    flag_rates: tuple[CategoryRate, ...]
    cost: ReplayCost
    #: The first changes in time order (all of them in changes.jsonl).
    changes_shown: tuple[Change, ...]
    #: Against the labels given with --labels; None without.
    labeled: LabeledReport | None = None


class RetentionGap(_Frozen):
    """A partition whose oldest retained record is younger than --from: older traffic is gone."""

    topic: str
    partition: int
    log_start: int
    earliest: AwareDatetime


class RunFigures(_Frozen):
    """How the replay ran: differs between runs of the same replay."""

    busy_seconds: float
    items_per_second: float


class ReplayReport(_Frozen):
    from_time: AwareDatetime
    to_time: AwareDatetime
    verdicts_until: AwareDatetime
    retention_gaps: tuple[RetentionGap, ...]
    #: Input records that are not valid events (the worker dead-letters them).
    undecodable_records: int
    #: Live (automated) verdicts read in the verdict window, and other verdicts left out.
    live_verdicts_read: int
    other_verdicts_skipped: int
    packs: tuple[PackReport, ...]
    run: RunFigures
    generated_at: datetime


class SweepSet(_Frozen):
    """The packs' tables at one set of thresholds, from the stored scores."""

    label: str
    thresholds: dict[str, dict[str, float]]
    packs: tuple[PackReport, ...]


class SweepReport(_Frozen):
    from_time: AwareDatetime
    to_time: AwareDatetime
    sets: tuple[SweepSet, ...]


def deterministic(report: ReplayReport) -> dict[str, Any]:
    """The report without what differs between runs (timing): equal for a resumed replay."""
    return report.model_dump(mode="json", exclude={"run", "generated_at"})
