"""The cascade's figures (``eval --cascade-model``): its cost, and its effect on violation F1
and the automation rate against the first model's decisions alone, from the same run."""

from __future__ import annotations

from collections.abc import Sequence

from streamproc.accuracy import violation_confusion
from streamproc.evaluation.report.model import (
    CascadeFigures,
    CascadeReport,
    PrecisionRecallF1,
    RunReport,
    ServedModel,
)
from streamproc.evaluation.runner import PackRun
from streamproc.schemas import Decision

__all__ = ["cascade_headline", "cascade_markdown", "cascade_report"]


def cascade_report(run: PackRun, model: ServedModel) -> CascadeReport | None:
    """The cascade's figures for a pack with a ``cascade`` band; None for one without."""
    cascade = run.policy.cascade
    if cascade is None:
        return None
    # The first model's errors are left out, as everywhere; the second's go to review.
    pairs = [(r, r.without_cascade or r) for r in run.results]
    pairs = [(mine, alone) for mine, alone in pairs if alone.error is None]
    cascaded = [mine for mine, _ in pairs if mine.without_cascade is not None]
    requests = sum(r.second_model_requests for r in cascaded)
    return CascadeReport(
        model=model,
        band_low=cascade.band.low,
        band_high=cascade.band.high,
        items=len(pairs),
        cascaded=len(cascaded),
        second_model_requests=requests,
        extra_requests_per_item=requests / len(pairs) if pairs else 0.0,
        second_model_errors=sum(1 for r in cascaded if r.error is not None),
        decisions_changed=sum(1 for mine, alone in pairs if mine.decision != alone.decision),
        without_cascade=_figures([(alone.item.true_categories, alone.decision) for _, alone in pairs]),
        with_cascade=_figures([(mine.item.true_categories, mine.decision) for mine, _ in pairs]),
    )


def _figures(decided: Sequence[tuple[tuple[str, ...], Decision]]) -> CascadeFigures:
    confusion = violation_confusion((truth, decision, 1.0) for truth, decision in decided)
    review = sum(1 for _, decision in decided if decision == "review")
    return CascadeFigures(
        violation=PrecisionRecallF1(precision=confusion.precision, recall=confusion.recall, f1=confusion.f1),
        automation_rate=(len(decided) - review) / len(decided) if decided else 0.0,
        review=review,
    )


def cascade_markdown(pack: RunReport) -> list[str]:
    """The cascade section of a pack in ``report.md``; nothing without a cascade."""
    c = pack.cascade
    if c is None:
        return []
    rows = [_row("first model alone", c.without_cascade), _row("with the cascade", c.with_cascade)]
    header = ("decisions", "violation precision", "violation recall", "violation F1", "automation rate")
    table = ["| " + " | ".join([*header, "review"]) + " |", "|" + "---|" * (len(header) + 1)]
    table += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return [
        "### Cascade",
        "",
        f"Items with a calibrated score in [{c.band_low:g}, {c.band_high:g}) went to `{c.model.name}` "
        f"at {c.model.base_url}, whose scores decided: {c.cascaded} of {c.items} items cascaded, "
        f"{c.second_model_requests} extra requests ({c.extra_requests_per_item:.2f} per item), "
        f"{c.second_model_errors} second-model failure(s) sent to review, {c.decisions_changed} "
        "decision(s) changed. Both rows come from the same run (a failure of the second model "
        "counts as the review it becomes).",
        "",
        *table,
        "",
    ]


def cascade_headline(label: str, c: CascadeReport) -> str:
    """One line of ``streamproc eval``'s output: the cascade's cost and effect."""
    before, after = c.without_cascade, c.with_cascade
    return (
        f"{label} cascade to {c.model.name}: {c.cascaded} of {c.items} items, "
        f"+{c.extra_requests_per_item:.2f} requests per item; violation F1 {before.violation.f1:.3f} "
        f"-> {after.violation.f1:.3f}, automation rate {before.automation_rate:.1%} -> "
        f"{after.automation_rate:.1%}"
    )


def _row(name: str, f: CascadeFigures) -> list[str]:
    v = f.violation
    return [
        name,
        f"{v.precision:.3f}",
        f"{v.recall:.3f}",
        f"{v.f1:.3f}",
        f"{f.automation_rate:.1%}",
        str(f.review),
    ]
