"""The report's numbers, computed once from the packs' runs.

Everything in the report is computed from the per-item list it also holds (``items``), so
that anyone can recompute it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from streamproc.accuracy.confusion import Confusion, confusion_by_category
from streamproc.accuracy.curves import average_precision, best_f1, pr_curve, threshold_sweep
from streamproc.evaluation.report.cascade import cascade_report
from streamproc.evaluation.report.model import (
    CategoryDelta,
    CategoryEntry,
    Comparison,
    ConfusionMatrix,
    DatasetRef,
    DecidedByRef,
    DecisionBrief,
    DecisionCounts,
    DecisionDifference,
    ErrorItem,
    EvalReport,
    InPackCategory,
    ItemReport,
    OutOfPackCategory,
    PrecisionRecallCurve,
    PrecisionRecallF1,
    RunReport,
    ServedModel,
    ThresholdPoint,
)
from streamproc.evaluation.report.violation import violation_delta, violation_report
from streamproc.evaluation.runner import RULE_WITHOUT_CATEGORY, ItemResult, PackRun
from streamproc.policy import Thresholds

__all__ = ["ReportContext", "build_report"]


@dataclass(frozen=True)
class ReportContext:
    """Where the numbers came from."""

    dataset: str
    dataset_items: int
    model: str
    base_url: str
    generated_at: datetime
    #: The cascade's second model (``eval --cascade-model``).
    cascade: ServedModel | None = None


def build_report(context: ReportContext, runs: Sequence[PackRun]) -> EvalReport:
    """The report: one section per pack, a comparison when there are two (a pack and its candidate)."""
    categories = _categories(runs)
    names = [run.policy.name for run in runs]
    # Two versions of one pack share a name; tell them apart by version.
    labels = names if len(set(names)) == len(names) else [run.policy.version for run in runs]
    packs = tuple(
        _run_report(run, categories, label, context.cascade) for run, label in zip(runs, labels, strict=True)
    )
    return EvalReport(
        dataset=DatasetRef(path=context.dataset, items=context.dataset_items),
        model=ServedModel(name=context.model, base_url=context.base_url),
        generated_at=context.generated_at,
        categories=categories,
        packs=packs,
        comparison=_comparison(runs[0], runs[1], *packs) if len(runs) == 2 else None,
    )


def _categories(runs: Sequence[PackRun]) -> tuple[str, ...]:
    """The packs' categories, in the first pack's order, then any the others add."""
    seen: list[str] = []
    for run in runs:
        seen += [c for c in run.policy.category_ids if c not in seen]
    return tuple(seen)


def _run_report(
    run: PackRun, categories: Sequence[str], label: str, cascade: ServedModel | None
) -> RunReport:
    policy, evaluated = run.policy, run.evaluated
    scored = [r for r in evaluated if r.scored]
    by_category = confusion_by_category(
        ((r.item.true_categories, r.flagged, 1.0) for r in evaluated), categories
    )
    thresholds = {c.id: c.thresholds for c in policy.categories}
    return RunReport(
        name=policy.name,
        version=policy.version,
        label=label,
        content_type=policy.content_type,
        scorer=policy.scorer,
        items_total=len(run.results),
        evaluated=len(evaluated),
        skipped_other_content_type=run.skipped,
        errors=len(run.errors),
        error_items=tuple(
            ErrorItem(id=r.item.id, line=r.item.line, error=r.error)
            for r in run.errors
            if r.error is not None
        ),
        scored_by_model=len(scored),
        categories={c: _category(c, by_category[c], scored, thresholds.get(c)) for c in categories},
        decisions=_decisions(evaluated),
        violation=violation_report(evaluated),
        confusion_matrix=_confusion_matrix(evaluated, categories),
        items=tuple(_item(r) for r in run.results),
        calibration=policy.calibration_provenance,
        cascade=cascade_report(run, cascade) if cascade is not None else None,
    )


def _category(
    category: str, confusion: Confusion, scored: Sequence[ItemResult], thresholds: Thresholds | None
) -> CategoryEntry:
    """The pack's decisions for one category; with the model's scores swept when the pack has it."""
    figures = OutOfPackCategory(
        precision=confusion.precision,
        recall=confusion.recall,
        f1=confusion.f1,
        support=int(confusion.tp + confusion.fn),
        tp=int(confusion.tp),
        fp=int(confusion.fp),
        fn=int(confusion.fn),
        tn=int(confusion.tn),
    )
    if thresholds is None:
        return figures
    truth = [category in r.item.true_categories for r in scored]
    scores = [r.scores.get(category, 0.0) for r in scored]
    sweep = threshold_sweep(truth, scores)
    best = best_f1(sweep)
    curve = pr_curve(truth, scores) if scored else None
    at_review = threshold_sweep(truth, scores, [thresholds.review])[0]
    return InPackCategory(
        **figures.model_dump(exclude={"in_pack"}),
        review_threshold=thresholds.review,
        reject_threshold=thresholds.reject,
        model_at_review_threshold=PrecisionRecallF1(
            precision=at_review.precision, recall=at_review.recall, f1=at_review.f1
        ),
        best_f1_threshold=best.threshold if best else None,
        best_f1=best.f1 if best else 0.0,
        average_precision=average_precision(curve) if curve and any(truth) else None,
        sweep=tuple(
            ThresholdPoint(
                threshold=p.threshold,
                precision=p.precision,
                recall=p.recall,
                f1=p.f1,
                tp=int(p.confusion.tp),
                fp=int(p.confusion.fp),
                fn=int(p.confusion.fn),
                tn=int(p.confusion.tn),
            )
            for p in sweep
        ),
        pr_curve=(
            PrecisionRecallCurve(precision=curve.precision, recall=curve.recall, thresholds=curve.thresholds)
            if curve
            else None
        ),
    )


def _decisions(evaluated: Sequence[ItemResult]) -> DecisionCounts:
    counts = {d: sum(1 for r in evaluated if r.decision == d) for d in ("approve", "review", "reject")}
    automated = counts["approve"] + counts["reject"]
    return DecisionCounts(
        approve=counts["approve"],
        review=counts["review"],
        reject=counts["reject"],
        automation_rate=automated / len(evaluated) if evaluated else 0.0,
        approved_violating=sum(1 for r in evaluated if r.decision == "approve" and r.item.true_categories),
        rejected_clean=sum(1 for r in evaluated if r.decision == "reject" and not r.item.true_categories),
    )


def _confusion_matrix(results: Sequence[ItemResult], categories: Sequence[str]) -> ConfusionMatrix:
    """Rows: each true category of an item (or ``none``); columns: the predicted class."""
    rows = (*categories, "none")
    columns = (*categories, RULE_WITHOUT_CATEGORY, "none")
    counts = {row: dict.fromkeys(columns, 0) for row in rows}
    for result in results:
        predicted = result.predicted_class
        if predicted not in columns:  # a rule naming a category outside the list
            predicted = RULE_WITHOUT_CATEGORY
        for truth in result.item.true_categories or ("none",):
            counts[truth][predicted] += 1
    return ConfusionMatrix(rows=rows, columns=columns, counts=counts)


def _decided_by(result: ItemResult) -> DecidedByRef:
    return DecidedByRef(kind=result.decided_by, id=result.decided_by_id)


def _item(result: ItemResult) -> ItemReport:
    return ItemReport(
        id=result.item.id,
        line=result.item.line,
        true_categories=result.item.true_categories,
        scores=result.scores,
        decision=result.decision,
        decided_by=_decided_by(result),
        reason_code=result.reason_code,
        flagged_categories=result.flagged,
        error=result.error,
        rule_stage=result.rule_stage,
        model_decision=result.model_decision,
        requests=result.requests,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        second_model_requests=result.second_model_requests,
        without_cascade=_brief(result.without_cascade) if result.without_cascade else None,
    )


def _brief(result: ItemResult) -> DecisionBrief:
    return DecisionBrief(
        decision=result.decision, flagged_categories=result.flagged, decided_by=_decided_by(result)
    )


def _comparison(base: PackRun, other: PackRun, base_report: RunReport, other_report: RunReport) -> Comparison:
    """Deltas are ``other - base``; differences list items whose decision or flags differ."""
    others = {r.item.id: r for r in other.results}
    differences = [
        DecisionDifference(
            id=result.item.id,
            line=result.item.line,
            true_categories=result.item.true_categories,
            base=_brief(result),
            other=_brief(theirs),
        )
        for result in base.results
        if (theirs := others.get(result.item.id)) is not None
        and (result.decision, result.flagged) != (theirs.decision, theirs.flagged)
    ]
    return Comparison(
        base=base_report.label,
        other=other_report.label,
        category_deltas=_deltas(base_report.categories, other_report.categories),
        automation_rate_delta=other_report.decisions.automation_rate - base_report.decisions.automation_rate,
        violation_delta=violation_delta(base_report.violation.system, other_report.violation.system),
        decision_differences=tuple(differences),
    )


def _deltas(
    base: Mapping[str, CategoryEntry], other: Mapping[str, CategoryEntry]
) -> dict[str, CategoryDelta]:
    return {
        category: CategoryDelta(
            precision=other[category].precision - mine.precision,
            recall=other[category].recall - mine.recall,
            f1=other[category].f1 - mine.f1,
            tp=other[category].tp - mine.tp,
            fp=other[category].fp - mine.fp,
            fn=other[category].fn - mine.fn,
        )
        for category, mine in base.items()
    }
