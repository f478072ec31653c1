"""The replay's tables from replayed items and live verdicts: pure, so a sweep builds the same
tables from recomputed items and a test recomputes them by hand."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Final

from streamproc.evaluation.replay.join import RevisionKey
from streamproc.evaluation.replay.labels import Labels, labeled_report
from streamproc.evaluation.replay.records import ReplayedItem
from streamproc.evaluation.replay.report import (
    CategoryRate,
    Change,
    PackReport,
    ReplayCost,
    VerdictBrief,
)
from streamproc.policy import Policy
from streamproc.schemas import Decision, Verdict

__all__ = ["DECISIONS", "changes", "pack_report", "unique_items"]

#: In order of severity: the rows and columns of the change matrix.
DECISIONS: Final[tuple[Decision, ...]] = ("approve", "review", "reject")


def unique_items(items: Sequence[ReplayedItem]) -> tuple[list[ReplayedItem], int]:
    """The items in time order, each revision once (its first record); and how many records
    repeated a revision already seen. Ties go by topic, partition and offset: the order is the
    same however the replay's runs were interleaved."""
    ordered = sorted(items, key=lambda i: (i.timestamp_ms, i.topic, i.partition, i.offset))
    first: dict[RevisionKey, ReplayedItem] = {}
    for item in ordered:
        first.setdefault(item.revision_key, item)
    return list(first.values()), len(ordered) - len(first)


def changes(
    policy: Policy, items: Sequence[ReplayedItem], live: Mapping[RevisionKey, Verdict]
) -> list[Change]:
    """Items (in time order, each revision once) whose candidate decision or flagged categories
    differ from their live verdict's."""
    found = []
    for item in unique_items(items)[0]:
        verdict = live.get(item.revision_key)
        if verdict is None or _same(item, verdict):
            continue
        found.append(
            Change(
                pack=item.pack,
                content_type=item.content_type,
                content_id=item.content_id,
                revision=item.revision,
                topic=item.topic,
                partition=item.partition,
                offset=item.offset,
                timestamp=datetime.fromtimestamp(item.timestamp_ms / 1000, UTC),
                live=_live_brief(verdict),
                candidate=_candidate_brief(policy, item),
            )
        )
    return found


def pack_report(
    policy: Policy,
    items: Sequence[ReplayedItem],
    live: Mapping[RevisionKey, Verdict],
    *,
    shown: int,
    labels: Labels | None = None,
) -> PackReport:
    """One pack's tables; ``items`` are its replayed items, ``shown`` the changes listed; with
    ``labels``, the figures against them."""
    unique, duplicates = unique_items(items)
    pairs = [(item, live[item.revision_key]) for item in unique if item.revision_key in live]
    matrix = {row: dict.fromkeys(DECISIONS, 0) for row in DECISIONS}
    for item, verdict in pairs:
        matrix[verdict.decision][item.decision] += 1
    found = changes(policy, unique, live)
    return PackReport(
        pack=policy.name,
        version=policy.version,
        content_type=policy.content_type,
        items=len(unique),
        duplicates=duplicates,
        with_live_verdict=len(pairs),
        without_live_verdict=len(unique) - len(pairs),
        candidate_errors=sum(1 for i in unique if i.decided_by.kind == "error"),
        live_policy_versions=dict(sorted(Counter(v.policy_version for _, v in pairs).items())),
        decisions=matrix,
        changed=len(found),
        live_automation_rate=_automated([v.decision for _, v in pairs]),
        candidate_automation_rate=_automated([i.decision for i, _ in pairs]),
        candidate_automation_rate_all=_automated([i.decision for i in unique]),
        flag_rates=_flag_rates(policy, pairs),
        cost=_cost(unique, [v for _, v in pairs]),
        changes_shown=tuple(found[:shown]),
        labeled=labeled_report(policy, unique, live, labels) if labels is not None else None,
    )


def _same(item: ReplayedItem, verdict: Verdict) -> bool:
    return item.decision == verdict.decision and set(item.flagged) == set(verdict.flagged_categories)


def _automated(decisions: Sequence[Decision]) -> float:
    """Share decided without a person (not review); 0 over no items."""
    return sum(1 for d in decisions if d != "review") / len(decisions) if decisions else 0.0


def _flag_rates(policy: Policy, pairs: Sequence[tuple[ReplayedItem, Verdict]]) -> tuple[CategoryRate, ...]:
    live = Counter(c for _, v in pairs for c in set(v.flagged_categories))
    candidate = Counter(c for i, _ in pairs for c in set(i.flagged))
    total = len(pairs)
    return tuple(
        CategoryRate(
            category=c,
            live=live[c] / total if total else 0.0,
            candidate=candidate[c] / total if total else 0.0,
            live_count=live[c],
            candidate_count=candidate[c],
        )
        for c in policy.category_ids
    )


def _cost(items: Sequence[ReplayedItem], verdicts: Sequence[Verdict]) -> ReplayCost:
    requests = sum(i.requests for i in items)
    prompt = sum(i.prompt_tokens for i in items)
    return ReplayCost(
        requests=requests,
        prompt_tokens=prompt,
        completion_tokens=sum(i.completion_tokens for i in items),
        second_model_requests=sum(i.second_model_requests for i in items),
        requests_per_item=requests / len(items) if items else 0.0,
        prompt_tokens_per_item=prompt / len(items) if items else 0.0,
        live_prompt_tokens=sum(v.usage.prompt_tokens for v in verdicts if v.usage is not None),
        live_completion_tokens=sum(v.usage.completion_tokens for v in verdicts if v.usage is not None),
    )


def _live_brief(verdict: Verdict) -> VerdictBrief:
    return VerdictBrief(
        decision=verdict.decision,
        flagged=tuple(verdict.flagged_categories),
        decided_by=verdict.decided_by,
        reason_code=verdict.reason_code,
        policy_version=verdict.policy_version,
        scores=dict(verdict.scores),
    )


def _candidate_brief(policy: Policy, item: ReplayedItem) -> VerdictBrief:
    return VerdictBrief(
        decision=item.decision,
        flagged=item.flagged,
        decided_by=item.decided_by,
        reason_code=item.reason_code,
        policy_version=policy.version,
        scores=item.scores,
    )
