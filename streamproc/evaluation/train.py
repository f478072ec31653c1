"""Fitting probe heads on embeddings of a labeled split (``streamproc train``).

Per head (one for "any violation", one per category against the rest): scikit-learn's
logistic regression on standardised embeddings, balanced class weights, and the
regularisation strength chosen by stratified cross-validation (ROC AUC) inside the
training data only. The result is plain data (``ProbeHeads``), never a pickle.

Thresholds must not be fitted on the scores of the items a head was trained on (they are
optimistic), so ``folds`` also gives the out-of-fold heads: each fold's items scored by
heads trained, the same way, on the other folds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from streamproc.policy.heads import HEADS_FORMAT, Backbone, LinearHead, ProbeHeads

__all__ = ["C_GRID", "Fold", "HeadFigures", "fit_heads", "folds"]

#: Inverse regularisation strengths tried (small: few items, many features).
C_GRID: Final = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
_SEED: Final = 0
_MAX_FOLDS: Final = 5

Matrix = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True)
class HeadFigures:
    """One head's cross-validated figures inside the training data."""

    positives: int
    items: int
    c: float
    cv_auc: float


@dataclass(frozen=True)
class Fold:
    """Heads fitted without the items at ``held_out`` (indexes into the training data)."""

    held_out: tuple[int, ...]
    heads: ProbeHeads


def _fit_head(z: Matrix, y: np.ndarray[Any, np.dtype[np.bool_]]) -> tuple[LinearHead, HeadFigures]:
    """C by cross-validated ROC AUC (the stronger regularisation on a tie), then a fit on all."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - the calibrate extra
    from sklearn.model_selection import StratifiedKFold, cross_val_score  # noqa: PLC0415

    positives = int(y.sum())
    splits = min(_MAX_FOLDS, positives, len(y) - positives)
    if splits < 2:
        raise ValueError(f"a head needs at least 2 positives and 2 negatives, got {positives} of {len(y)}")
    cv = StratifiedKFold(splits, shuffle=True, random_state=_SEED)

    def model(c: float) -> Any:
        return LogisticRegression(C=c, class_weight="balanced", max_iter=5000)

    aucs = {c: float(np.mean(cross_val_score(model(c), z, y, cv=cv, scoring="roc_auc"))) for c in C_GRID}
    c = max(C_GRID, key=lambda value: (round(aucs[value], 4), -value))
    fitted = model(c).fit(z, y)
    head = LinearHead(weights=tuple(float(w) for w in fitted.coef_[0]), bias=float(fitted.intercept_[0]))
    return head, HeadFigures(positives, len(y), c, aucs[c])


def fit_heads(
    x: Matrix,
    labels: Sequence[Sequence[str]],
    categories: Sequence[str],
    backbone: Backbone,
    provenance: Mapping[str, Any],
) -> tuple[ProbeHeads, dict[str, HeadFigures]]:
    """Heads for every category and for "any violation", with each head's CV figures.

    Raises:
        ValueError: a head has fewer than two positives or negatives.
    """
    backbone = dataclasses.replace(backbone, width=x.shape[1])  # what the server returned
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-8] = 1.0  # a constant feature: left as it is
    z = (x - mean) / scale
    flagged, flagged_figures = _fit_head(z, np.array([bool(item) for item in labels]))
    heads: dict[str, LinearHead] = {}
    figures = {"(any violation)": flagged_figures}
    for category in categories:
        heads[category], figures[category] = _fit_head(z, np.array([category in item for item in labels]))
    probe = ProbeHeads(
        format=HEADS_FORMAT,
        backbone=backbone,
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        flagged=flagged,
        categories=heads,
        provenance={
            **provenance,
            "cross_validated": {
                name: {"positives": f.positives, "items": f.items, "c": f.c, "auc": round(f.cv_auc, 4)}
                for name, f in figures.items()
            },
        },
    )
    return probe, figures


def folds(
    x: Matrix, labels: Sequence[Sequence[str]], categories: Sequence[str], backbone: Backbone
) -> Iterator[Fold]:
    """Out-of-fold heads: folds stratified on each item's first category (or clean), so every
    category has positives on the training side; each fold's heads fitted as ``fit_heads``
    fits them (C chosen again inside the other folds)."""
    from sklearn.model_selection import StratifiedKFold  # noqa: PLC0415

    strata = np.array([sorted(item)[0] if item else "" for item in labels], dtype=object)
    values, counts = np.unique(strata, return_counts=True)
    rare = {str(v) for v, n in zip(values, counts, strict=True) if n < _MAX_FOLDS and v}
    strata = np.array(["(rare)" if s in rare else s for s in strata], dtype=object)  # with each other
    smallest = int(min(np.unique(strata, return_counts=True)[1]))
    splitter = StratifiedKFold(max(2, min(_MAX_FOLDS, smallest)), shuffle=True, random_state=_SEED)
    for train, held_out in splitter.split(x, strata):
        heads, _ = fit_heads(x[train], [labels[i] for i in train], categories, backbone, {})
        yield Fold(tuple(int(i) for i in held_out), heads)
