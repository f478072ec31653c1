"""Score calibration: a category's ``calibration`` block applied to the scorer's score.

Pure Python (no numpy, no scikit-learn): it runs on every scored item in the worker. The
fitting side is streamproc.evaluation.calibrate; both use :func:`logit` and :data:`EPSILON`,
so a fitted calibration is applied exactly as it was fitted.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping

from streamproc.policy.model import (
    Calibration,
    ContextualCalibration,
    IsotonicCalibration,
    PlattCalibration,
    Policy,
)

__all__ = [
    "EPSILON",
    "apply_calibration",
    "calibrated_scores",
    "describe_calibrated",
    "describe_calibration",
    "logit",
    "second_opinion_scores",
]

#: Scores are clipped to [EPSILON, 1 - EPSILON] before a logit: a label absent from the
#: model's alternatives scores exactly 0.
EPSILON = 1e-6


def logit(p: float) -> float:
    """log(p / (1 - p)) of ``p`` clipped to [EPSILON, 1 - EPSILON]."""
    p = min(max(p, EPSILON), 1.0 - EPSILON)
    return math.log(p / (1.0 - p))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)  # no overflow for large negative z
    return e / (1.0 + e)


def apply_calibration(calibration: Calibration, score: float) -> float:
    """The calibrated score, in [0, 1]."""
    if isinstance(calibration, PlattCalibration):
        return _sigmoid(calibration.a * logit(score) + calibration.b)
    if isinstance(calibration, IsotonicCalibration):
        return _interpolate(calibration.points, score)
    if isinstance(calibration, ContextualCalibration):
        b = calibration.bias
        if score <= 0.0 or score >= 1.0:
            return min(max(score, 0.0), 1.0)
        odds = (score / b) / ((1.0 - score) / (1.0 - b))
        return odds / (1.0 + odds)
    raise TypeError(f"unknown calibration {calibration!r}")  # pragma: no cover - the union is closed


def _interpolate(points: tuple[tuple[float, float], ...], score: float) -> float:
    """``numpy.interp`` over the points: the end values outside them."""
    if score <= points[0][0]:
        return points[0][1]
    if score >= points[-1][0]:
        return points[-1][1]
    right = bisect.bisect_right(points, score, key=lambda point: point[0])
    (x0, y0), (x1, y1) = points[right - 1], points[right]
    return y0 + (y1 - y0) * (score - x0) / (x1 - x0)


def calibrated_scores(policy: Policy, scores: Mapping[str, float]) -> dict[str, float]:
    """Each score through its category's calibration; categories without one, and scores of
    no category of the pack, unchanged."""
    calibrations = {c.id: c.calibration for c in policy.categories if c.calibration is not None}
    return _apply(calibrations, scores)


def second_opinion_scores(policy: Policy, scores: Mapping[str, float]) -> dict[str, float]:
    """The cascade's second model's scores, calibrated: by the cascade's own calibration when
    it has its own scorer (the categories' fit the pack's scorer), else as ``calibrated_scores``."""
    if policy.cascade is None or policy.cascade.scorer is None:
        return calibrated_scores(policy, scores)
    return _apply(dict(policy.cascade.calibration), scores)


def _apply(calibrations: Mapping[str, Calibration], scores: Mapping[str, float]) -> dict[str, float]:
    if not calibrations:
        return dict(scores)
    return {
        category: apply_calibration(calibrations[category], score) if category in calibrations else score
        for category, score in scores.items()
    }


def describe_calibration(calibration: Calibration | None) -> str:
    """One short phrase: ``platt a=1.2 b=-0.3``, ``isotonic, 7 points``, ``contextual bias=0.1``."""
    if calibration is None:
        return "none"
    if isinstance(calibration, PlattCalibration):
        return f"platt a={calibration.a:.4g} b={calibration.b:.4g}"
    if isinstance(calibration, IsotonicCalibration):
        return f"isotonic, {len(calibration.points)} points"
    return f"contextual bias={calibration.bias:.4g}"


def describe_calibrated(policy: Policy) -> list[str]:
    """What ``streamproc policy check`` shows of a pack's calibration: its provenance, then each
    calibrated or fitted category's thresholds and calibration; nothing for a plain pack."""
    provenance = policy.calibration_provenance
    lines = []
    if provenance is not None:
        lines.append(
            f"calibrated {provenance.created_at.isoformat()} by {provenance.tool}: method "
            f"{provenance.method}, targets review recall {provenance.review_recall:g} / reject "
            f"precision {provenance.reject_precision:g}, on {provenance.dataset} (sha256 "
            f"{provenance.dataset_sha256[:12]}, {provenance.items} items, {provenance.scored_items} "
            f"scored), model {provenance.model}, scorer {provenance.scorer}"
        )
    fitted = set(provenance.categories) if provenance is not None else set()
    for category in policy.categories:
        if category.calibration is None and category.id not in fitted:
            continue
        origin = "" if category.id in fitted or provenance is None else " (not fitted in that run)"
        lines.append(
            f"{category.id}: review {category.thresholds.review:g}, reject {category.thresholds.reject:g}, "
            f"calibration {describe_calibration(category.calibration)}{origin}"
        )
    return lines
