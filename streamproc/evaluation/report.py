"""The evaluation report: numbers as JSON, the same numbers as markdown, PR curves as PNG.

Everything in the report is computed from the per-item list it also holds (``items``), so
that anyone can recompute it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from streamproc.accuracy.confusion import Confusion, confusion_by_category
from streamproc.accuracy.curves import average_precision, best_f1, pr_curve, threshold_sweep
from streamproc.evaluation.runner import RULE_WITHOUT_CATEGORY, ItemResult, PackRun

__all__ = ["ReportContext", "build_report", "render_markdown", "write_report"]

_METRICS = ("precision", "recall", "f1")


@dataclass(frozen=True)
class ReportContext:
    """Where the numbers came from."""

    dataset: str
    dataset_items: int
    model: str
    base_url: str
    generated_at: datetime


def build_report(context: ReportContext, runs: Sequence[PackRun]) -> dict[str, Any]:
    """The report as JSON-ready data: one section per pack, a comparison when there are two."""
    categories = _categories(runs)
    names = [run.policy.name for run in runs]
    # Two versions of one pack share a name; tell them apart by version.
    labels = names if len(set(names)) == len(names) else [run.policy.version for run in runs]
    report: dict[str, Any] = {
        "dataset": {"path": context.dataset, "items": context.dataset_items},
        "model": {"name": context.model, "base_url": context.base_url},
        "generated_at": context.generated_at.isoformat(),
        "categories": categories,
        "packs": [_pack_section(run, categories, label) for run, label in zip(runs, labels, strict=True)],
    }
    if len(runs) == 2:  # a pack and the one it is compared with
        report["comparison"] = _comparison(runs[0], runs[1], *report["packs"])
    return report


def write_report(out: Path, report: dict[str, Any]) -> list[Path]:
    """Write report.json, report.md and pr_<category>.png files; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")
    plots = _plot_curves(out, report)
    md_path.write_text(render_markdown(report, {c: p.name for c, p in plots.items()}), encoding="utf-8")
    return [json_path, md_path, *plots.values()]


# --- numbers ---------------------------------------------------------------------------


def _categories(runs: Sequence[PackRun]) -> list[str]:
    """The packs' categories, in the first pack's order, then any the others add."""
    seen: list[str] = []
    for run in runs:
        seen += [c for c in run.policy.category_ids if c not in seen]
    return seen


def _counts(confusion: Confusion) -> dict[str, Any]:
    return {
        "precision": confusion.precision,
        "recall": confusion.recall,
        "f1": confusion.f1,
        "support": int(confusion.tp + confusion.fn),
        **_tally(confusion),
    }


def _pack_section(run: PackRun, categories: list[str], label: str) -> dict[str, Any]:
    policy = run.policy
    evaluated = run.evaluated
    scored = [r for r in evaluated if r.scored]
    by_category = confusion_by_category(
        ((r.item.true_categories, r.flagged, 1.0) for r in evaluated), categories
    )
    thresholds = {c.id: c.thresholds for c in policy.categories}
    section_categories: dict[str, Any] = {}
    for category in categories:
        entry: dict[str, Any] = {"in_pack": category in thresholds, **_counts(by_category[category])}
        if category in thresholds:
            truth = [category in r.item.true_categories for r in scored]
            scores = [r.scores.get(category, 0.0) for r in scored]
            sweep = threshold_sweep(truth, scores)
            best = best_f1(sweep)
            curve = pr_curve(truth, scores) if scored else None
            at_review = threshold_sweep(truth, scores, [thresholds[category].review])[0]
            entry.update(
                review_threshold=thresholds[category].review,
                reject_threshold=thresholds[category].reject,
                model_at_review_threshold={m: getattr(at_review, m) for m in _METRICS},
                best_f1_threshold=best.threshold if best else None,
                best_f1=best.f1 if best else 0.0,
                average_precision=average_precision(curve) if curve and any(truth) else None,
                sweep=[
                    {"threshold": p.threshold, **{m: getattr(p, m) for m in _METRICS}, **_tally(p.confusion)}
                    for p in sweep
                ],
                pr_curve=(
                    {"precision": curve.precision, "recall": curve.recall, "thresholds": curve.thresholds}
                    if curve
                    else None
                ),
            )
        section_categories[category] = entry
    decisions = {d: sum(1 for r in evaluated if r.decision == d) for d in ("approve", "review", "reject")}
    return {
        "name": policy.name,
        "version": policy.version,
        "label": label,
        "content_type": policy.content_type,
        "items_total": len(run.results),
        "evaluated": len(evaluated),
        "skipped_other_content_type": run.skipped,
        "errors": len(run.errors),
        "error_items": [{"id": r.item.id, "line": r.item.line, "error": r.error} for r in run.errors],
        "scored_by_model": len(scored),
        "categories": section_categories,
        "decisions": {
            **decisions,
            "automation_rate": _share(decisions["approve"] + decisions["reject"], len(evaluated)),
            "approved_violating": sum(
                1 for r in evaluated if r.decision == "approve" and r.item.true_categories
            ),
            "rejected_clean": sum(
                1 for r in evaluated if r.decision == "reject" and not r.item.true_categories
            ),
        },
        "confusion_matrix": _confusion_matrix(evaluated, categories),
        "items": [_item(r) for r in run.results],
    }


def _tally(confusion: Confusion) -> dict[str, int]:
    return {
        "tp": int(confusion.tp),
        "fp": int(confusion.fp),
        "fn": int(confusion.fn),
        "tn": int(confusion.tn),
    }


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _confusion_matrix(results: Sequence[ItemResult], categories: list[str]) -> dict[str, Any]:
    """Rows: each true category of an item (or ``none``); columns: the predicted class."""
    rows = [*categories, "none"]
    columns = [*categories, RULE_WITHOUT_CATEGORY, "none"]
    counts = {row: dict.fromkeys(columns, 0) for row in rows}
    for result in results:
        predicted = result.predicted_class
        if predicted not in counts["none"]:  # a rule naming a category outside the list
            predicted = RULE_WITHOUT_CATEGORY
        for truth in result.item.true_categories or ("none",):
            counts[truth][predicted] += 1
    return {"rows": rows, "columns": columns, "counts": counts}


def _item(result: ItemResult) -> dict[str, Any]:
    return {
        "id": result.item.id,
        "line": result.item.line,
        "true_categories": list(result.item.true_categories),
        "scores": result.scores,
        "decision": result.decision,
        "decided_by": {"kind": result.decided_by, "id": result.decided_by_id},
        "reason_code": result.reason_code,
        "flagged_categories": list(result.flagged),
        "error": result.error,
    }


def _comparison(
    base: PackRun, other: PackRun, base_section: dict[str, Any], other_section: dict[str, Any]
) -> dict[str, Any]:
    """Deltas are ``other - base``; differences list items whose decision or flags differ."""
    deltas = {
        category: {
            m: other_section["categories"][category][m] - entry[m] for m in (*_METRICS, "tp", "fp", "fn")
        }
        for category, entry in base_section["categories"].items()
    }
    others = {r.item.id: r for r in other.results}
    differences = []
    for result in base.results:
        theirs = others.get(result.item.id)
        if theirs is None:
            continue
        if (result.decision, result.flagged) != (theirs.decision, theirs.flagged):
            differences.append(
                {
                    "id": result.item.id,
                    "line": result.item.line,
                    "true_categories": list(result.item.true_categories),
                    "base": _brief(result),
                    "other": _brief(theirs),
                }
            )
    return {
        "base": base_section["label"],
        "other": other_section["label"],
        "category_deltas": deltas,
        "automation_rate_delta": other_section["decisions"]["automation_rate"]
        - base_section["decisions"]["automation_rate"],
        "decision_differences": differences,
    }


def _brief(result: ItemResult) -> dict[str, Any]:
    return {
        "decision": result.decision,
        "flagged_categories": list(result.flagged),
        "decided_by": {"kind": result.decided_by, "id": result.decided_by_id},
    }


# --- plots -------------------------------------------------------------------------------


def _plot_curves(out: Path, report: dict[str, Any]) -> dict[str, Path]:
    """One PNG per category: every pack's precision-recall curve on the same axes."""
    import matplotlib as mpl  # noqa: PLC0415 - only the report needs it

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    paths: dict[str, Path] = {}
    for category in report["categories"]:
        figure, axes = plt.subplots(figsize=(6, 5.5), dpi=100)
        drawn = False
        for index, pack in enumerate(report["packs"]):
            entry = pack["categories"][category]
            curve = entry.get("pr_curve")
            if not curve:
                continue
            drawn = True
            ap = entry["average_precision"]
            label = pack["label"] if ap is None else f"{pack['label']} (AP {ap:.2f})"
            # Dashed for the second pack: equal curves (same scores) must both stay visible.
            line = axes.plot(
                curve["recall"],
                curve["precision"],
                drawstyle="steps-post",
                linestyle="-" if index == 0 else "--",
                label=label,
            )[0]
            point = entry["model_at_review_threshold"]
            axes.plot(
                point["recall"],
                point["precision"],
                marker="o" if index == 0 else "s",
                markersize=8 if index == 0 else 6,
                linestyle="none",
                color=line.get_color(),
                label=f"{pack['label']} at review threshold {entry['review_threshold']:g}",
            )
        if not drawn:
            axes.text(0.5, 0.5, "no item scored by the model", ha="center", va="center")
        axes.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall", ylabel="precision", title=category)
        axes.grid(alpha=0.3)
        if drawn:
            axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize="small", frameon=False)
        figure.tight_layout()
        path = out / f"pr_{category}.png"
        figure.savefig(path)
        plt.close(figure)
        paths[category] = path
    return paths


# --- markdown ----------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def render_markdown(report: dict[str, Any], plots: dict[str, str]) -> str:
    packs = report["packs"]
    names = " vs ".join(f"`{p['version']}`" for p in packs)
    lines = [
        f"# Offline evaluation: {names}",
        "",
        f"Dataset `{report['dataset']['path']}` ({report['dataset']['items']} items), model "
        f"`{report['model']['name']}` at {report['model']['base_url']}, {report['generated_at']}.",
        "",
        "An item is predicted positive for a category when the verdict flags it (score at or above "
        "the review threshold, or a rule naming it). Items whose inference failed are listed as "
        "errors and left out of every number.",
        "",
    ]
    for pack in packs:
        lines += _pack_markdown(pack, len(packs) > 1)
    if "comparison" in report:
        lines += _comparison_markdown(report)
    lines += ["## Precision-recall curves", ""]
    lines += [f"![{category}]({plots[category]})" for category in report["categories"] if category in plots]
    lines.append("")
    return "\n".join(lines)


def _pack_markdown(pack: dict[str, Any], several: bool) -> list[str]:
    decisions = pack["decisions"]
    lines = [
        f"## {pack['name']} (`{pack['version']}`)" if several else f"## {pack['name']}",
        "",
        f"{pack['items_total']} {pack['content_type']} items ({pack['skipped_other_content_type']} "
        f"items of the other content type skipped): {pack['errors']} inference error(s), left out; "
        f"{pack['scored_by_model']} scored by the model; "
        f"{pack['evaluated'] - pack['scored_by_model']} decided by pre-rules without it.",
        "",
        "### Decisions",
        "",
        *_table(
            [
                "approve",
                "review",
                "reject",
                "automation rate",
                "approved but violating",
                "rejected but clean",
            ],
            [
                [
                    decisions["approve"],
                    decisions["review"],
                    decisions["reject"],
                    f"{decisions['automation_rate']:.1%}",
                    decisions["approved_violating"],
                    decisions["rejected_clean"],
                ]
            ],
        ),
        "",
        "### Per category, at the pack's thresholds",
        "",
    ]
    rows = []
    for category, entry in pack["categories"].items():
        if not entry["in_pack"]:
            rows.append([category, "not in pack", "", "", entry["support"], "", "", "", "", "", "", ""])
            continue
        best = entry["best_f1_threshold"]
        rows.append(
            [
                category,
                _pct(entry["precision"]),
                _pct(entry["recall"]),
                _pct(entry["f1"]),
                entry["support"],
                entry["tp"],
                entry["fp"],
                entry["fn"],
                entry["tn"],
                f"{entry['review_threshold']:g}",
                "-" if best is None else f"{best:g} (F1 {entry['best_f1']:.2f})",
                _pct(entry["average_precision"]),
            ]
        )
    lines += _table(
        [
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
        ],
        rows,
    )
    matrix = pack["confusion_matrix"]
    lines += [
        "",
        "### Confusion matrix",
        "",
        f"Rows: true category (an item counts once per true category; `none`: clean). Columns: the "
        f"deciding category, or the first flagged one (`{RULE_WITHOUT_CATEGORY}`: a rule that named none; "
        "`none`: approved).",
        "",
        *_table(
            ["true \\ predicted", *matrix["columns"]],
            [[row, *(matrix["counts"][row][c] for c in matrix["columns"])] for row in matrix["rows"]],
        ),
        "",
        "### Threshold sweep (model score only)",
        "",
        "Over the items the model scored; precision / recall / F1 when a category is flagged at "
        "score ≥ threshold.",
        "",
    ]
    sweep_categories = [c for c, e in pack["categories"].items() if e["in_pack"]]
    thresholds = [p["threshold"] for p in pack["categories"][sweep_categories[0]]["sweep"]]
    lines += _table(
        ["threshold", *sweep_categories],
        [
            [
                f"{t:g}",
                *(
                    "{precision:.2f} / {recall:.2f} / {f1:.2f}".format(**pack["categories"][c]["sweep"][i])
                    for c in sweep_categories
                ),
            ]
            for i, t in enumerate(thresholds)
        ],
    )
    if pack["error_items"]:
        lines += ["", "### Inference errors (excluded from the numbers)", ""]
        lines += [f"- `{e['id']}` (line {e['line']}): {e['error']}" for e in pack["error_items"]]
    lines.append("")
    return lines


def _comparison_markdown(report: dict[str, Any]) -> list[str]:
    comparison = report["comparison"]
    base, other = report["packs"]
    lines = [
        f"## Comparison: {comparison['other']} against {comparison['base']}",
        "",
        f"Automation rate {base['decisions']['automation_rate']:.1%} → "
        f"{other['decisions']['automation_rate']:.1%} "
        f"({comparison['automation_rate_delta'] * 100:+.1f} percentage points).",
        "",
    ]
    rows = []
    for category, delta in comparison["category_deltas"].items():
        a, b = base["categories"][category], other["categories"][category]
        rows.append(
            [
                category,
                a["support"],
                *(f"{a[m]:.2f} → {b[m]:.2f} ({delta[m]:+.2f})" for m in _METRICS),
                *(f"{a[m]} → {b[m]}" for m in ("tp", "fp", "fn")),
            ]
        )
    lines += _table(["category", "support", "precision", "recall", "F1", "tp", "fp", "fn"], rows)
    differences = comparison["decision_differences"]
    lines += ["", f"### Items decided differently ({len(differences)})", ""]
    if differences:

        def show(side: dict[str, Any]) -> str:
            flagged = ", ".join(side["flagged_categories"]) or "-"
            return f"{side['decision']} ({flagged})"

        lines += _table(
            ["item", "true categories", comparison["base"], comparison["other"]],
            [
                [
                    f"`{d['id']}`",
                    ", ".join(d["true_categories"]) or "none",
                    show(d["base"]),
                    show(d["other"]),
                ]
                for d in differences
            ],
        )
    else:
        lines.append("None: both packs decided every item alike.")
    lines.append("")
    return lines
