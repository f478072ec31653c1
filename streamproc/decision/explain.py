"""A verdict's explanation: which scores crossed which thresholds and by how much, which rule
decided and where it matched, which text window the deciding score came from. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from streamproc.decision.thresholds import Outcome
from streamproc.policy import Category, Policy
from streamproc.policy.rule_match import RuleSpan
from streamproc.schemas import CategoryMargin, Explanation, RuleMatch, WindowSpan
from streamproc.schemas.explanation import MAX_EXPLAINED_CATEGORIES

__all__ = ["WindowScores", "explain"]

#: ``decided_by.id`` of an outcome a failing rule decided: ``rule:RULE_ID`` (decide_on_rule_error).
_RULE_ERROR_PREFIX = "rule:"


@dataclass(frozen=True)
class WindowScores:
    """One text window's scores before calibration (calibrations are increasing, so the window
    with the highest raw score also has the highest calibrated one), and what the window reads
    (``ItemContent.covers``: None for the first window)."""

    scores: Mapping[str, float]
    covers: tuple[str, int, int] | None = None


def explain(
    policy: Policy,
    outcome: Outcome,
    scores: Mapping[str, float],
    *,
    windows: Sequence[WindowScores] = (),
    span: RuleSpan | None = None,
) -> Explanation:
    """What decided ``outcome``, for the verdict.

    Args:
        policy: The pack that decided: thresholds, rules' stages, the heads' checksum.
        outcome: The decision and what settled it.
        scores: The deciding (calibrated) scores; empty when a pre-rule or an error decided.
        windows: Each scored window's raw scores, in window order, when the model read several.
        span: Where the deciding rule matched the item (``CompiledRules.span``), if it can say.
    """
    margins, omitted = _margins(policy, outcome, scores)
    several = len(windows) > 1
    if several:
        margins = [m.model_copy(update={"window": _window_of(m.category, windows)}) for m in margins]
    window = None
    if several and margins and margins[0].window is not None:
        index = margins[0].window
        field, start, end = windows[index].covers or (None, None, None)
        window = WindowSpan(index=index, field=field, start=start, end=end, windows=len(windows))
    rule, error_kind = _rule_and_error(policy, outcome, span)
    return Explanation(
        categories=margins,
        omitted_categories=omitted,
        rule=rule,
        window=window,
        error_kind=error_kind,
        artefacts={"heads": policy.heads.sha256} if policy.heads is not None else {},
    )


def _margins(
    policy: Policy, outcome: Outcome, scores: Mapping[str, float]
) -> tuple[list[CategoryMargin], int]:
    """The categories that reached a threshold, the deciding one first, at most
    MAX_EXPLAINED_CATEGORIES (and how many were left out); else the closest one."""
    scored = [(index, c, scores[c.id]) for index, c in enumerate(policy.categories) if c.id in scores]
    reached = [(index, c, score) for index, c, score in scored if score >= c.thresholds.review]
    if not reached:
        # Nothing reached a threshold: how close the highest score came (first listed on ties).
        closest = max(scored, key=lambda s: (s[2], -s[0]), default=None)
        return ([_margin(closest[1], closest[2])] if closest is not None else []), 0
    deciding = outcome.decided_by.id if outcome.decided_by.kind == "category" else outcome.rule_category
    reached.sort(key=lambda s: (s[1].id != deciding, s[2] < s[1].thresholds.reject, -s[2], s[0]))
    margins = [_margin(c, score) for _, c, score in reached[:MAX_EXPLAINED_CATEGORIES]]
    return margins, max(0, len(reached) - MAX_EXPLAINED_CATEGORIES)


def _margin(category: Category, score: float) -> CategoryMargin:
    reject = score >= category.thresholds.reject
    value = category.thresholds.reject if reject else category.thresholds.review
    return CategoryMargin(
        category=category.id,
        score=score,
        threshold="reject" if reject else "review",
        threshold_value=value,
        margin=round(score - value, 6),
    )


def _window_of(category: str, windows: Sequence[WindowScores]) -> int | None:
    """The window the category's score came from: its highest (the first of equals)."""
    best: tuple[float, int] | None = None
    for index, window in enumerate(windows):
        score = window.scores.get(category)
        if score is not None and (best is None or score > best[0]):
            best = (score, index)
    return best[1] if best is not None else None


def _rule_and_error(
    policy: Policy, outcome: Outcome, span: RuleSpan | None
) -> tuple[RuleMatch | None, str | None]:
    decided_by = outcome.decided_by
    if decided_by.kind == "rule" and decided_by.id is not None:
        return _rule_match(policy, decided_by.id, span), None
    if decided_by.kind != "error":
        return None, None
    if decided_by.id is not None and decided_by.id.startswith(_RULE_ERROR_PREFIX):
        return _rule_match(policy, decided_by.id.removeprefix(_RULE_ERROR_PREFIX), None), "rule_failed"
    return None, decided_by.id


def _rule_match(policy: Policy, rule_id: str, span: RuleSpan | None) -> RuleMatch | None:
    rule = next((r for r in policy.rules if r.id == rule_id), None)
    if rule is None:  # not this pack's rule: nothing to say about it
        return None
    if span is None:
        return RuleMatch(rule_id=rule_id, stage=rule.stage)
    return RuleMatch(
        rule_id=rule_id,
        stage=rule.stage,
        field=span.field,
        text=span.text,
        start=span.start,
        end=span.end,
        list_name=span.list_name,
        entry=span.entry,
    )
