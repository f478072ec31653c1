"""``report.md``: the report's numbers as tables for people, with the PR-curve plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from streamproc.evaluation.report.cascade import cascade_markdown
from streamproc.evaluation.report.model import (
    Comparison,
    DecisionBrief,
    EvalReport,
    InPackCategory,
    RunReport,
    ViolationFigures,
    ViolationReport,
)
from streamproc.evaluation.runner import RULE_WITHOUT_CATEGORY

__all__ = ["render_markdown", "violation_headline", "violation_markdown"]

_VIOLATION_INTRO = (
    "An item violates when a person named any category for it; it is flagged when its decision is "
    "review or reject. Baselines over the same items and run: *rules only* keeps the decision of "
    "each item a rule (pre or post) decided and approves the rest, without the model; *all "
    "approve* flags nothing. Cost: the model requests and prompt tokens the run used per item."
)

_CATEGORY_HEADER = (
    "category",
    "precision",
    "recall",
    "F1",
    "support",
    "tp",
    "fp",
    "fn",
    "tn",
    "review threshold",
    "best-F1 threshold",
    "AP",
)


def render_markdown(report: EvalReport, plots: Mapping[str, str]) -> str:
    """The report as markdown; ``plots`` maps a category to its PNG's path relative to the file."""
    names = " vs ".join(f"`{p.version}`" for p in report.packs)
    lines = [
        f"# Offline evaluation: {names}",
        "",
        f"Dataset `{report.dataset.path}` ({report.dataset.items} items), model "
        f"`{report.model.name}` at {report.model.base_url}, {report.generated_at.isoformat()}.",
        "",
        "An item is predicted positive for a category when the verdict flags it (score at or above "
        "the review threshold, or a rule naming it). Items whose inference failed are listed as "
        "errors and left out of every number.",
        "",
        *violation_markdown([(p.label, p.violation) for p in report.packs]),
    ]
    for pack in report.packs:
        lines += _run_markdown(pack, several=len(report.packs) > 1)
    if report.comparison is not None:
        lines += _comparison_markdown(report.comparison, *report.packs)
    lines += ["## Precision-recall curves", ""]
    lines += [f"![{category}]({plots[category]})" for category in report.categories if category in plots]
    lines.append("")
    return "\n".join(lines)


def violation_markdown(packs: Sequence[tuple[str, ViolationReport]]) -> list[str]:
    """The violation section: per pack, a system / rules only / all approve table."""
    lines = ["## Violation (flagged vs clean)", "", _VIOLATION_INTRO, ""]
    for label, violation in packs:
        if len(packs) > 1:
            lines += [f"**`{label}`**", ""]
        columns = (violation.system, violation.rules_only, violation.all_approve)
        rows = [
            ["precision", *(f"{f.precision:.2f}" for f in columns)],
            ["recall", *(f"{f.recall:.2f}" for f in columns)],
            ["F1", *(f"{f.f1:.2f}" for f in columns)],
            ["tp / fp / fn / tn", *(f"{f.tp} / {f.fp} / {f.fn} / {f.tn}" for f in columns)],
            ["model requests / item", *(f"{f.cost.requests_per_item:.2f}" for f in columns)],
            ["prompt tokens / item", *(f"{f.cost.prompt_tokens_per_item:.0f}" for f in columns)],
        ]
        lines += _table(["violation (flagged vs clean)", "system", "rules only", "all approve"], rows)
        lines += ["", _contribution(violation), ""]
    return lines


def _contribution(violation: ViolationReport) -> str:
    added = violation.model_added
    gain = added.violating / violation.violating if violation.violating else 0.0
    return (
        f"{violation.items} items, {violation.violating} violating. Rules flagged "
        f"{violation.flagged_by_pre_rules + violation.flagged_by_post_rules} "
        f"({violation.flagged_by_pre_rules} before the model, {violation.flagged_by_post_rules} after it, "
        f"{violation.post_rule_flags_over_model_approval} of those over a model approval); the model's "
        f"categories flagged {added.flagged} more: {added.violating} violating (recall "
        f"{gain:+.2f}), {added.clean} clean."
    )


def violation_headline(label: str, violation: ViolationReport) -> str:
    """One console line: the system's figures, the baselines' and the cost per item."""

    def brief(f: ViolationFigures) -> str:
        return f"P {f.precision:.2f} R {f.recall:.2f} F1 {f.f1:.2f}"

    system = violation.system
    return (
        f"{label}: violation (flagged vs clean) over {violation.items} items, {violation.violating} "
        f"violating: system {brief(system)} (tp {system.tp} fp {system.fp} fn {system.fn} tn {system.tn}) "
        f"| rules only {brief(violation.rules_only)} | all approve {brief(violation.all_approve)} "
        f"| {system.cost.requests_per_item:.2f} requests, {system.cost.prompt_tokens_per_item:.0f} "
        "prompt tokens per item"
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _run_markdown(pack: RunReport, *, several: bool) -> list[str]:
    lines = [
        f"## {pack.name} (`{pack.version}`)" if several else f"## {pack.name}",
        "",
        f"{pack.items_total} {pack.content_type} items ({pack.skipped_other_content_type} "
        f"items of the other content type skipped): {pack.errors} inference error(s), left out; "
        f"{pack.scored_by_model} scored by the model; "
        f"{pack.evaluated - pack.scored_by_model} decided by pre-rules without it.",
        "",
    ]
    lines += _calibration_markdown(pack)
    lines += _decisions_markdown(pack)
    lines += cascade_markdown(pack)
    lines += _categories_markdown(pack)
    lines += _confusion_markdown(pack)
    lines += _sweep_markdown(pack)
    if pack.error_items:
        lines += ["", "### Inference errors (excluded from the numbers)", ""]
        lines += [f"- `{e.id}` (line {e.line}): {e.error}" for e in pack.error_items]
    lines.append("")
    return lines


def _calibration_markdown(pack: RunReport) -> list[str]:
    """Where a calibrated pack's thresholds came from (``calibration_provenance``)."""
    p = pack.calibration
    if p is None:
        return []
    return [
        f"Calibrated on `{p.dataset}` (sha256 `{p.dataset_sha256[:12]}`, {p.items} items, {p.scored_items} "
        f"scored) with model `{p.model}` ({p.scorer}), method {p.method}, targets: review recall "
        f"{p.review_recall:g}, reject precision {p.reject_precision:g}; categories fitted: "
        f"{', '.join(p.categories) or 'none'}; {p.created_at.isoformat()}, {p.tool}.",
        "",
    ]


def _decisions_markdown(pack: RunReport) -> list[str]:
    decisions = pack.decisions
    header = [
        "approve",
        "review",
        "reject",
        "automation rate",
        "approved but violating",
        "rejected but clean",
    ]
    row = [
        decisions.approve,
        decisions.review,
        decisions.reject,
        f"{decisions.automation_rate:.1%}",
        decisions.approved_violating,
        decisions.rejected_clean,
    ]
    return ["### Decisions", "", *_table(header, [row]), ""]


def _categories_markdown(pack: RunReport) -> list[str]:
    rows: list[list[object]] = []
    for category, entry in pack.categories.items():
        if not isinstance(entry, InPackCategory):
            rows.append([category, "not in pack", "", "", entry.support, "", "", "", "", "", "", ""])
            continue
        best = entry.best_f1_threshold
        rows.append(
            [
                category,
                _pct(entry.precision),
                _pct(entry.recall),
                _pct(entry.f1),
                entry.support,
                entry.tp,
                entry.fp,
                entry.fn,
                entry.tn,
                f"{entry.review_threshold:g}",
                "-" if best is None else f"{best:g} (F1 {entry.best_f1:.2f})",
                _pct(entry.average_precision),
            ]
        )
    return ["### Per category, at the pack's thresholds", "", *_table(_CATEGORY_HEADER, rows)]


def _confusion_markdown(pack: RunReport) -> list[str]:
    matrix = pack.confusion_matrix
    return [
        "",
        "### Confusion matrix",
        "",
        f"Rows: true category (an item counts once per true category; `none`: clean). Columns: the "
        f"deciding category, or the first flagged one (`{RULE_WITHOUT_CATEGORY}`: a rule that named none; "
        "`none`: approved).",
        "",
        *_table(
            ["true \\ predicted", *matrix.columns],
            [[row, *(matrix.counts[row][c] for c in matrix.columns)] for row in matrix.rows],
        ),
    ]


def _sweep_markdown(pack: RunReport) -> list[str]:
    swept = {c: e for c, e in pack.categories.items() if isinstance(e, InPackCategory)}
    # Every pack category is swept over the same thresholds; take them from the first.
    thresholds = [p.threshold for p in next(iter(swept.values())).sweep]
    rows = [
        [
            f"{t:g}",
            *(
                f"{p.precision:.2f} / {p.recall:.2f} / {p.f1:.2f}"
                for p in (e.sweep[i] for e in swept.values())
            ),
        ]
        for i, t in enumerate(thresholds)
    ]
    return [
        "",
        "### Threshold sweep (model score only)",
        "",
        "Over the items the model scored; precision / recall / F1 when a category is flagged at "
        "score ≥ threshold.",
        "",
        *_table(["threshold", *swept], rows),
    ]


def _comparison_markdown(comparison: Comparison, base: RunReport, other: RunReport) -> list[str]:
    lines = [
        f"## Comparison: {comparison.other} against {comparison.base}",
        "",
        f"Automation rate {base.decisions.automation_rate:.1%} → "
        f"{other.decisions.automation_rate:.1%} "
        f"({comparison.automation_rate_delta * 100:+.1f} percentage points).",
        "",
    ]
    lines += _violation_comparison(comparison, base, other)
    rows = []
    for category, delta in comparison.category_deltas.items():
        a, b = base.categories[category], other.categories[category]
        rows.append(
            [
                category,
                a.support,
                f"{a.precision:.2f} → {b.precision:.2f} ({delta.precision:+.2f})",
                f"{a.recall:.2f} → {b.recall:.2f} ({delta.recall:+.2f})",
                f"{a.f1:.2f} → {b.f1:.2f} ({delta.f1:+.2f})",
                f"{a.tp} → {b.tp}",
                f"{a.fp} → {b.fp}",
                f"{a.fn} → {b.fn}",
            ]
        )
    lines += _table(["category", "support", "precision", "recall", "F1", "tp", "fp", "fn"], rows)
    differences = comparison.decision_differences
    lines += ["", f"### Items decided differently ({len(differences)})", ""]
    if differences:
        lines += _table(
            ["item", "true categories", comparison.base, comparison.other],
            [
                [f"`{d.id}`", ", ".join(d.true_categories) or "none", _brief(d.base), _brief(d.other)]
                for d in differences
            ],
        )
    else:
        lines.append("None: both packs decided every item alike.")
    lines.append("")
    return lines


def _violation_comparison(comparison: Comparison, base: RunReport, other: RunReport) -> list[str]:
    a, b, delta = base.violation.system, other.violation.system, comparison.violation_delta
    rows = [
        ["scorer", base.scorer, other.scorer, ""],
        ["precision", f"{a.precision:.2f}", f"{b.precision:.2f}", f"{delta.precision:+.2f}"],
        ["recall", f"{a.recall:.2f}", f"{b.recall:.2f}", f"{delta.recall:+.2f}"],
        ["F1", f"{a.f1:.2f}", f"{b.f1:.2f}", f"{delta.f1:+.2f}"],
        ["tp / fp / fn", f"{a.tp} / {a.fp} / {a.fn}", f"{b.tp} / {b.fp} / {b.fn}",
         f"{delta.tp:+d} / {delta.fp:+d} / {delta.fn:+d}"],
        ["model requests / item", f"{a.cost.requests_per_item:.2f}", f"{b.cost.requests_per_item:.2f}",
         f"{delta.requests_per_item:+.2f}"],
        ["prompt tokens / item", f"{a.cost.prompt_tokens_per_item:.0f}",
         f"{b.cost.prompt_tokens_per_item:.0f}", f"{delta.prompt_tokens_per_item:+.0f}"],
    ]  # fmt: skip
    return [
        "### Violation (flagged vs clean)",
        "",
        *_table(["", comparison.base, comparison.other, "change"], rows),
        "",
        "### Per category",
        "",
    ]


def _brief(side: DecisionBrief) -> str:
    return f"{side.decision} ({', '.join(side.flagged_categories) or '-'})"
