"""The violation figures of a run: caught at all (flagged vs clean), against two baselines.

Both baselines come from the same run, with no second pass over the model: *rules only*
keeps each item's deciding rule (pre or post) and approves the rest; *all approve* flags
nothing. A post-rule is counted as the rules' even where its condition reads the model's
scores or decision, since that is the rule that decided. What the rules did not flag and
the model's categories did is the model's own contribution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from streamproc.accuracy import Confusion, violates, violation_confusion
from streamproc.evaluation.report.model import (
    ConfusionFigures,
    ModelContribution,
    ModelCost,
    ViolationDelta,
    ViolationFigures,
    ViolationReport,
)
from streamproc.evaluation.runner import ItemResult
from streamproc.schemas import Decision

__all__ = ["combine_violation", "confusion_figures", "violation_delta", "violation_report"]

_NO_COST = (0, 0, 0)


def violation_report(evaluated: Sequence[ItemResult]) -> ViolationReport:
    """The figures over the evaluated items (inference errors left out, as everywhere)."""
    usage = (
        sum(r.requests for r in evaluated),
        sum(r.prompt_tokens for r in evaluated),
        sum(r.completion_tokens for r in evaluated),
    )
    by_model = [r for r in evaluated if r.flagged_by_model]
    rule_flags = [r for r in evaluated if r.decided_by == "rule" and r.decision != "approve"]
    post = [r for r in rule_flags if r.rule_stage == "post"]
    return ViolationReport(
        items=len(evaluated),
        violating=sum(1 for r in evaluated if violates(r.item.true_categories)),
        system=_figures(_confusion(evaluated, lambda r: r.decision), len(evaluated), usage),
        rules_only=_figures(_confusion(evaluated, lambda r: r.rules_only_decision), len(evaluated)),
        all_approve=_figures(_confusion(evaluated, lambda r: "approve"), len(evaluated)),
        model_added=ModelContribution(
            flagged=len(by_model),
            violating=sum(1 for r in by_model if violates(r.item.true_categories)),
            clean=sum(1 for r in by_model if not violates(r.item.true_categories)),
        ),
        flagged_by_pre_rules=sum(1 for r in rule_flags if r.rule_stage == "pre"),
        flagged_by_post_rules=len(post),
        post_rule_flags_over_model_approval=sum(1 for r in post if r.model_decision == "approve"),
    )


def combine_violation(reports: Sequence[ViolationReport]) -> ViolationReport:
    """Several packs' figures as one: counts added, ratios recomputed from the sums."""

    def total(pick: Callable[[ViolationReport], ViolationFigures]) -> ViolationFigures:
        figures = [pick(r) for r in reports]
        confusion = Confusion(
            tp=sum(f.tp for f in figures),
            fp=sum(f.fp for f in figures),
            fn=sum(f.fn for f in figures),
            tn=sum(f.tn for f in figures),
        )
        usage = (
            sum(f.cost.requests for f in figures),
            sum(f.cost.prompt_tokens for f in figures),
            sum(f.cost.completion_tokens for f in figures),
        )
        return _figures(confusion, sum(r.items for r in reports), usage)

    return ViolationReport(
        items=sum(r.items for r in reports),
        violating=sum(r.violating for r in reports),
        system=total(lambda r: r.system),
        rules_only=total(lambda r: r.rules_only),
        all_approve=total(lambda r: r.all_approve),
        model_added=ModelContribution(
            flagged=sum(r.model_added.flagged for r in reports),
            violating=sum(r.model_added.violating for r in reports),
            clean=sum(r.model_added.clean for r in reports),
        ),
        flagged_by_pre_rules=sum(r.flagged_by_pre_rules for r in reports),
        flagged_by_post_rules=sum(r.flagged_by_post_rules for r in reports),
        post_rule_flags_over_model_approval=sum(r.post_rule_flags_over_model_approval for r in reports),
    )


def violation_delta(base: ViolationFigures, other: ViolationFigures) -> ViolationDelta:
    """``other - base``."""
    return ViolationDelta(
        precision=other.precision - base.precision,
        recall=other.recall - base.recall,
        f1=other.f1 - base.f1,
        tp=other.tp - base.tp,
        fp=other.fp - base.fp,
        fn=other.fn - base.fn,
        requests_per_item=other.cost.requests_per_item - base.cost.requests_per_item,
        prompt_tokens_per_item=other.cost.prompt_tokens_per_item - base.cost.prompt_tokens_per_item,
    )


def _confusion(evaluated: Sequence[ItemResult], decision: Callable[[ItemResult], Decision]) -> Confusion:
    return violation_confusion((r.item.true_categories, decision(r), 1.0) for r in evaluated)


def confusion_figures(confusion: Confusion) -> ConfusionFigures:
    """Precision, recall, F1 and the (unweighted) counts of a confusion."""
    counts = {name: int(getattr(confusion, name)) for name in ("tp", "fp", "fn", "tn")}
    return ConfusionFigures(precision=confusion.precision, recall=confusion.recall, f1=confusion.f1, **counts)


def _figures(confusion: Confusion, items: int, usage: tuple[int, int, int] = _NO_COST) -> ViolationFigures:
    requests, prompt, completion = usage
    cost = ModelCost(
        requests=requests,
        prompt_tokens=prompt,
        completion_tokens=completion,
        requests_per_item=requests / items if items else 0.0,
        prompt_tokens_per_item=prompt / items if items else 0.0,
        completion_tokens_per_item=completion / items if items else 0.0,
    )
    return ViolationFigures(**confusion_figures(confusion).model_dump(), cost=cost)
