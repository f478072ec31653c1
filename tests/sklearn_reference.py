"""The reference computation accuracy figures are checked against: scikit-learn, multi-label."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import (
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


def check_report_section(pack: dict[str, Any], directory: Path) -> None:
    """Every number of one pack's `streamproc eval` report section equals scikit-learn's on the
    section's own items, and each category has its plot."""
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
