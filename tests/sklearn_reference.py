"""The reference computation accuracy figures are checked against: scikit-learn, multi-label."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
from sklearn.metrics import multilabel_confusion_matrix, precision_recall_fscore_support


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
