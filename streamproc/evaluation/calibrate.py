"""Fitting calibrations and thresholds on a labeled calibration split (``streamproc calibrate``).

Per category, on the items the model scored, category against the rest:
(a) optionally a calibration of the raw score (Platt or isotonic by scikit-learn, or
contextual from the scores of content-free items), then
(b) thresholds on the calibrated scores: review = the highest threshold whose recall reaches
the target, reject = the lowest threshold whose precision reaches the target.

The fitted calibration is rounded to what the pack file stores first, and the thresholds are
fitted on scores calibrated by that stored form with the worker's own function
(streamproc.policy.calibration), so the figures printed are the worker's figures.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from streamproc.errors import ConfigError
from streamproc.evaluation.runner import ItemResult
from streamproc.policy import Policy, Thresholds
from streamproc.policy.calibration import apply_calibration, logit
from streamproc.policy.model import (
    Calibration,
    CalibrationMethod,
    ContextualCalibration,
    IsotonicCalibration,
    PlattCalibration,
)

__all__ = [
    "CALIBRATE_EXTRA_HINT",
    "CategoryFit",
    "Figures",
    "Targets",
    "figures",
    "fit_category",
    "fit_contextual",
    "fit_isotonic",
    "fit_platt",
    "fit_thresholds",
    "require_fitting_libraries",
]

#: What a missing scikit-learn or ruamel.yaml is answered with.
CALIBRATE_EXTRA_HINT: Final = (
    "streamproc calibrate needs scikit-learn and ruamel.yaml, which are not installed; "
    "install them with: pip install 'streamproc[calibrate]'"
)
#: Decimals the pack file stores for calibration parameters and thresholds.
DECIMALS: Final = 6
_SCALE: Final = 10**DECIMALS


def require_fitting_libraries() -> None:
    """Raises ConfigError naming the ``calibrate`` extra when its libraries are missing."""
    from importlib.util import find_spec  # noqa: PLC0415

    if find_spec("sklearn") is None or find_spec("ruamel") is None or find_spec("ruamel.yaml") is None:
        raise ConfigError(CALIBRATE_EXTRA_HINT)


@dataclass(frozen=True)
class Targets:
    #: Recall the review threshold keeps; precision the reject threshold reaches.
    review_recall: float
    reject_precision: float


@dataclass(frozen=True)
class Figures:
    """Precision and recall when items scoring ≥ ``threshold`` are flagged; 0 where undefined."""

    threshold: float
    precision: float
    recall: float


@dataclass(frozen=True)
class CategoryFit:
    """One category's outcome: fitted, or kept as it was (``note`` says why)."""

    category: str
    positives: int
    negatives: int
    old: Thresholds
    new: Thresholds
    #: The new calibration; for a kept category, the one it had.
    calibration: Calibration | None
    fitted: bool
    #: At the new thresholds, on the calibration split (None for a kept category).
    review: Figures | None = None
    reject: Figures | None = None
    note: str = ""


# --- calibrators ------------------------------------------------------------------------------


def fit_platt(scores: Sequence[float], labels: Sequence[bool]) -> PlattCalibration:
    """Platt scaling on logit(score): a logistic regression with Platt's smoothed targets
    ((N+ + 1)/(N+ + 2) for positives, 1/(N- + 2) for negatives), which keeps the fit finite
    when the classes are separable. Each item enters twice, as positive and as negative,
    weighted by its target: the cross-entropy against the smoothed target, unpenalised."""
    import numpy as np  # noqa: PLC0415 - the calibrate extra
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    positives = sum(labels)
    negatives = len(labels) - positives
    target = np.array(
        [(positives + 1) / (positives + 2) if y else 1 / (negatives + 2) for y in labels], dtype=float
    )
    features = np.array([logit(s) for s in scores], dtype=float)
    # Newton steps: exact on one feature in a few iterations, where lbfgs can stall short of tol.
    model = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-8, max_iter=100)
    model.fit(
        np.concatenate([features, features])[:, None],
        np.concatenate([np.ones(len(features)), np.zeros(len(features))]),
        sample_weight=np.concatenate([target, 1.0 - target]),
    )
    return PlattCalibration(
        method="platt",
        a=round(float(model.coef_[0][0]), DECIMALS),
        b=round(float(model.intercept_[0]), DECIMALS),
    )


def fit_isotonic(scores: Sequence[float], labels: Sequence[bool]) -> IsotonicCalibration:
    """scikit-learn's isotonic regression, stored as its interpolation points.

    Raises:
        ConfigError: every item has the same score (nothing to interpolate).
    """
    from sklearn.isotonic import IsotonicRegression  # noqa: PLC0415 - the calibrate extra

    model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    model.fit(list(scores), [float(y) for y in labels])
    # x are the scores themselves, kept exact: a step between two close scores must stay between
    # them. y rounded (monotone rounding keeps them non-decreasing).
    points = [
        (float(x), round(float(y), DECIMALS))
        for x, y in zip(model.X_thresholds_, model.y_thresholds_, strict=True)
    ]
    if len(points) < 2:
        raise ConfigError("every item has the same score: an isotonic calibration needs two distinct scores")
    return IsotonicCalibration(method="isotonic", points=tuple(points))


def fit_contextual(content_free_scores: Sequence[float]) -> ContextualCalibration:
    """The bias: the mean score of the content-free items, kept inside (0, 1).

    Raises:
        ConfigError: the model scored no content-free item.
    """
    if not content_free_scores:
        raise ConfigError("the model scored no content-free item: a contextual calibration has no bias")
    mean = sum(content_free_scores) / len(content_free_scores)
    bias = min(max(round(mean, DECIMALS), 10**-DECIMALS), 1 - 10**-DECIMALS)
    return ContextualCalibration(method="contextual", bias=bias)


# --- thresholds -------------------------------------------------------------------------------


def figures(scores: Sequence[float], labels: Sequence[bool], threshold: float) -> Figures:
    flagged = [y for s, y in zip(scores, labels, strict=True) if s >= threshold]
    positives = sum(labels)
    tp = sum(flagged)
    return Figures(
        threshold,
        tp / len(flagged) if flagged else 0.0,
        tp / positives if positives else 0.0,
    )


def _stored(threshold: float, below: float) -> float:
    """``threshold`` rounded down to the stored decimals, unless that takes in the next lower
    score ``below``: then unrounded, so the stored threshold flags exactly the same items."""
    rounded = math.floor(threshold * _SCALE) / _SCALE
    return rounded if rounded > below else threshold


def fit_thresholds(
    scores: Sequence[float], labels: Sequence[bool], targets: Targets, shipped: Thresholds
) -> tuple[Thresholds, list[str]]:
    """Thresholds meeting the targets on these (calibrated) scores, and notes for the report.

    review: the highest threshold with recall ≥ the target; reject: the lowest with precision
    ≥ the target, or, when none reaches it, above every score seen (the shipped reject if it
    already is, else 1.0). Then review ≤ reject.
    """
    notes: list[str] = []
    distinct = sorted(set(scores))
    positive_scores = sorted((s for s, y in zip(scores, labels, strict=True) if y), reverse=True)
    needed = max(1, math.ceil(targets.review_recall * len(positive_scores) - 1e-9))
    review_at = positive_scores[needed - 1]
    review = _stored(review_at, _next_below(distinct, review_at))
    reject = _lowest_precise(scores, labels, targets.reject_precision)
    if reject is not None:
        reject = _stored(reject, _next_below(distinct, reject))
    if reject is None:
        reject = shipped.reject if shipped.reject > distinct[-1] else 1.0
        notes.append(
            f"no threshold reaches precision {targets.reject_precision:g}: reject stays above every "
            f"score seen ({reject:g})"
        )
    if review > reject:
        notes.append(f"review {review:g} lowered to reject {reject:g}")
        review = reject
    return Thresholds(reject=reject, review=review), notes


def _lowest_precise(scores: Sequence[float], labels: Sequence[bool], precision: float) -> float | None:
    """The lowest score t at which "score ≥ t" has at least ``precision``; one pass upwards,
    dropping the items below each candidate (n log n: splits may be large)."""
    pairs = sorted(zip(scores, labels, strict=True))
    flagged, hits, below = len(pairs), sum(labels), 0
    for threshold in sorted(set(scores)):
        while pairs[below][0] < threshold:
            flagged, hits, below = flagged - 1, hits - pairs[below][1], below + 1
        if hits / flagged >= precision:
            return threshold
    return None


def _next_below(ascending: Sequence[float], value: float) -> float:
    index = bisect.bisect_left(ascending, value)
    return ascending[index - 1] if index else -math.inf


# --- one category ------------------------------------------------------------------------------


def fit_category(
    policy: Policy,
    category: str,
    scored: Sequence[ItemResult],
    *,
    method: CalibrationMethod,
    targets: Targets,
    content_free: Sequence[float] = (),
    min_positives: int = 5,
) -> CategoryFit:
    """Fit one category on the scored items' raw scores (``scored``: no pre-rule, no error).

    Fewer than ``min_positives`` positives or negatives: the category is kept as it is.
    """
    current = next(c for c in policy.categories if c.id == category)
    raw = [r.scores.get(category, 0.0) for r in scored]
    labels = [category in r.item.true_categories for r in scored]
    positives, negatives = sum(labels), len(labels) - sum(labels)
    if positives < min_positives or negatives < min_positives:
        return CategoryFit(
            category, positives, negatives, current.thresholds, current.thresholds, current.calibration,
            fitted=False,
            note=f"kept: {positives} positives, {negatives} negatives scored; need {min_positives} of each",
        )  # fmt: skip
    calibration: Calibration | None
    if method == "platt":
        calibration = fit_platt(raw, labels)
    elif method == "isotonic":
        calibration = fit_isotonic(raw, labels)
    elif method == "contextual":
        calibration = fit_contextual(content_free)
    else:
        calibration = None
    calibrated = [apply_calibration(calibration, s) for s in raw] if calibration is not None else raw
    thresholds, notes = fit_thresholds(calibrated, labels, targets, current.thresholds)
    if isinstance(calibration, PlattCalibration) and calibration.a <= 0:
        notes.insert(0, f"platt slope a={calibration.a:g} ≤ 0: higher scores mean fewer violations here")
    return CategoryFit(
        category, positives, negatives, current.thresholds, thresholds, calibration,
        fitted=True,
        review=figures(calibrated, labels, thresholds.review),
        reject=figures(calibrated, labels, thresholds.reject),
        note="; ".join(notes),
    )  # fmt: skip
