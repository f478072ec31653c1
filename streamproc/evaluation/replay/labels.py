"""Replayed items against labels: the violation figures of the live verdicts and of the
candidate over the same labeled items, as ``streamproc eval`` computes them.

Labels are a labeled dataset (``streamproc export-labels`` writes one from the quality
service's store), joined to replayed items by content type, content id and revision. An item
*violates* when its true categories are not empty and is *flagged* when its decision is review
or reject (``streamproc.accuracy.violation_confusion``); per category, a side flags the
categories its verdict names (``confusion_by_category``). Items decided by an error on either
side are left out and counted, as ``eval`` leaves out the items inference failed on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from streamproc.accuracy import confusion_by_category, violates, violation_confusion
from streamproc.errors import ConfigError
from streamproc.evaluation.dataset import DatasetError, check_categories, load_dataset
from streamproc.evaluation.replay.join import RevisionKey
from streamproc.evaluation.replay.records import ReplayedItem
from streamproc.evaluation.replay.report import CategoryScores, LabeledReport
from streamproc.evaluation.report.violation import confusion_figures
from streamproc.policy import Policy
from streamproc.schemas import Verdict

__all__ = ["Labels", "labeled_report", "load_labels"]

#: Revision → true categories (empty: judged clean).
Labels = Mapping[RevisionKey, tuple[str, ...]]


def load_labels(path: Path, policies: Sequence[Policy]) -> dict[RevisionKey, tuple[str, ...]]:
    """The labels in ``path``, keyed by revision; the categories of the packs' content types
    must be the packs' own.

    Raises:
        ConfigError: one line naming --labels: the file is missing, empty or malformed (the
            first bad line and how many there are), or names categories no pack has.
    """
    try:
        items = load_dataset(path)
        types = {p.content_type for p in policies}
        check_categories(path, [i for i in items if i.content_type in types], policies)
    except DatasetError as exc:
        lines = str(exc).splitlines()
        detail = f"{lines[0].rstrip(':')}; the first: {lines[1]}" if len(lines) > 1 else lines[0]
        raise ConfigError(f"--labels: {detail}") from exc
    return {(i.content_type, i.event.content_id, i.event.revision): i.true_categories for i in items}


def labeled_report(
    policy: Policy,
    unique: Sequence[ReplayedItem],
    live: Mapping[RevisionKey, Verdict],
    labels: Labels,
) -> LabeledReport:
    """The figures over ``unique`` (a pack's replayed items, each revision once) that have a
    label, a live verdict and no error on either side."""
    labeled = [i for i in unique if i.revision_key in labels]
    replayed = {i.revision_key for i in unique}
    with_verdict = [(i, live[i.revision_key]) for i in labeled if i.revision_key in live]
    live_errors = {i.revision_key for i, v in with_verdict if v.decided_by.kind == "error"}
    candidate_errors = {i.revision_key for i, _ in with_verdict if i.decided_by.kind == "error"}
    compared = [
        (labels[i.revision_key], i, v)
        for i, v in with_verdict
        if i.revision_key not in live_errors | candidate_errors
    ]
    live_by_category = confusion_by_category(
        ((truth, v.flagged_categories, 1.0) for truth, _, v in compared), policy.category_ids
    )
    candidate_by_category = confusion_by_category(
        ((truth, i.flagged, 1.0) for truth, i, _ in compared), policy.category_ids
    )
    return LabeledReport(
        labeled=len(labeled),
        unlabeled=len(unique) - len(labeled),
        labels_unmatched=sum(1 for key in labels if key[0] == policy.content_type and key not in replayed),
        without_live_verdict=len(labeled) - len(with_verdict),
        live_errors=len(live_errors),
        candidate_errors=len(candidate_errors),
        compared=len(compared),
        violating=sum(1 for truth, _, _ in compared if violates(truth)),
        live=confusion_figures(violation_confusion((t, v.decision, 1.0) for t, _, v in compared)),
        candidate=confusion_figures(violation_confusion((t, i.decision, 1.0) for t, i, _ in compared)),
        categories=tuple(
            CategoryScores(
                category=c,
                live=confusion_figures(live_by_category[c]),
                candidate=confusion_figures(candidate_by_category[c]),
            )
            for c in policy.category_ids
        ),
    )
