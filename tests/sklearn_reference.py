"""The reference computation accuracy figures are checked against: scikit-learn, multi-label."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import (
    confusion_matrix,
    multilabel_confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
)


def sklearn_per_category(
    truths: Sequence[Collection[str]],
    predictions: Sequence[Collection[str]],
    weights: Sequence[float],
    categories: Sequence[str],
) -> dict[str, tuple[float, ...]]:
    """Per category: (tn, fp, fn, tp, precision, recall, F1), weighted, 0 where undefined."""
    y_true = np.array([[c in row for c in categories] for row in truths], dtype=int)
    y_pred = np.array([[c in row for c in categories] for row in predictions], dtype=int)
    matrices = multilabel_confusion_matrix(y_true, y_pred, sample_weight=weights)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average=None, sample_weight=weights, zero_division=0
    )
    return {
        category: (*(float(x) for x in matrices[i].ravel()), precision[i], recall[i], f1[i])
        for i, category in enumerate(categories)
    }


def sklearn_violation(
    truths: Sequence[Collection[str]], decisions: Sequence[str], weights: Sequence[float]
) -> tuple[float, ...]:
    """Violates any category against flagged (decision not approve): (tn, fp, fn, tp,
    precision, recall, F1), weighted, 0 where undefined."""
    y_true = [bool(row) for row in truths]
    y_pred = [decision != "approve" for decision in decisions]
    matrix = confusion_matrix(y_true, y_pred, labels=[False, True], sample_weight=weights)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="binary", sample_weight=weights, zero_division=0
    )
    return (*(float(x) for x in matrix.ravel()), float(precision), float(recall), float(f1))


def check_violation_section(pack: dict[str, Any]) -> None:
    """The pack's violation figures (system, rules only, all approve) equal scikit-learn's on
    the section's own items, each baseline recomputed from what decided each item."""
    evaluated = [i for i in pack["items"] if i["error"] is None]
    truths = [i["true_categories"] for i in evaluated]
    by_rule = [i["decided_by"]["kind"] == "rule" for i in evaluated]
    decisions = {
        "system": [i["decision"] for i in evaluated],
        "rules_only": [i["decision"] if r else "approve" for i, r in zip(evaluated, by_rule, strict=True)],
        "all_approve": ["approve"] * len(evaluated),
    }
    violation = pack["violation"]
    assert violation["items"] == len(evaluated)
    assert violation["violating"] == sum(1 for t in truths if t)
    for name, predicted in decisions.items():
        figures = violation[name]
        tn, fp, fn, tp, precision, recall, f1 = sklearn_violation(truths, predicted, [1.0] * len(truths))
        assert (figures["tn"], figures["fp"], figures["fn"], figures["tp"]) == (tn, fp, fn, tp), name
        assert (figures["precision"], figures["recall"], figures["f1"]) == pytest.approx(
            (precision, recall, f1)
        ), name
    cost = violation["system"]["cost"]
    assert cost["requests"] == sum(i["requests"] for i in evaluated)
    assert cost["prompt_tokens"] == sum(i["prompt_tokens"] for i in evaluated)
    assert cost["requests_per_item"] == pytest.approx(cost["requests"] / len(evaluated))
    assert cost["prompt_tokens_per_item"] == pytest.approx(cost["prompt_tokens"] / len(evaluated))
    for baseline in ("rules_only", "all_approve"):  # neither calls the model
        assert violation[baseline]["cost"]["requests"] == violation[baseline]["cost"]["prompt_tokens"] == 0
    # The model's own flags are exactly what the system adds to the rules.
    added, system, rules = violation["model_added"], violation["system"], violation["rules_only"]
    by_model = [i for i in evaluated if i["decided_by"]["kind"] == "category" and i["decision"] != "approve"]
    assert added["flagged"] == len(by_model)
    assert (added["violating"], added["clean"]) == (system["tp"] - rules["tp"], system["fp"] - rules["fp"])


def check_report_section(pack: dict[str, Any], directory: Path) -> None:
    """Every number of one pack's `streamproc eval` report section equals scikit-learn's on the
    section's own items, and each category has its plot."""
    check_violation_section(pack)
    evaluated = [i for i in pack["items"] if i["error"] is None]
    scored = [i for i in evaluated if i["scores"]]
    for category, entry in pack["categories"].items():
        truth = [category in i["true_categories"] for i in evaluated]
        predicted = [category in i["flagged_categories"] for i in evaluated]
        p, r, f, _ = precision_recall_fscore_support(truth, predicted, average="binary", zero_division=0)
        assert (entry["precision"], entry["recall"], entry["f1"]) == pytest.approx((p, r, f)), category
        assert entry["support"] == sum(truth) == entry["tp"] + entry["fn"]
        assert (entry["tp"], entry["fp"]) == (
            sum(t and q for t, q in zip(truth, predicted, strict=True)),
            sum(q and not t for t, q in zip(truth, predicted, strict=True)),
        )
        assert entry["tp"] + entry["fp"] + entry["fn"] + entry["tn"] == len(evaluated)
        # The sweep and the curve use the model's scores of the items it scored.
        sweep_truth = [category in i["true_categories"] for i in scored]
        sweep_scores = [i["scores"][category] for i in scored]
        assert any(sweep_truth), f"no model-scored {category} violation: its PR curve would go unchecked"
        assert len(entry["sweep"]) == 19
        for point in entry["sweep"]:
            sp, sr, sf, _ = precision_recall_fscore_support(
                sweep_truth,
                [s >= point["threshold"] for s in sweep_scores],
                average="binary",
                zero_division=0,
            )
            assert (point["precision"], point["recall"], point["f1"]) == pytest.approx((sp, sr, sf))
        precision, recall, _ = precision_recall_curve(sweep_truth, sweep_scores)
        assert entry["pr_curve"]["precision"] == pytest.approx(list(precision))
        assert entry["pr_curve"]["recall"] == pytest.approx(list(recall))
        assert (directory / f"pr_{category}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
