"""Threshold sweeps and precision-recall curves of one category's scores. Pure: no I/O.

Each category is its own binary problem (violates it or not), scored by the model's
probability for it. The curves follow scikit-learn's conventions so that numbers can be
checked against ``sklearn.metrics``: ``precision_recall_curve`` (thresholds ascending,
a final point at precision 1, recall 0; recall 1 everywhere when nothing is truly positive)
and ``average_precision_score``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from streamproc.accuracy.confusion import Confusion

__all__ = [
    "SWEEP_THRESHOLDS",
    "PRCurve",
    "SweepPoint",
    "average_precision",
    "best_f1",
    "pr_curve",
    "threshold_sweep",
]

#: 0.05, 0.10, …, 0.95 (rounded, so that 0.15 is 0.15 and not 0.15000000000000002).
SWEEP_THRESHOLDS: tuple[float, ...] = tuple(round(i * 0.05, 2) for i in range(1, 20))


@dataclass(frozen=True)
class SweepPoint:
    """Counts at one threshold: an item is predicted positive when its score is at or above it."""

    threshold: float
    confusion: Confusion

    @property
    def precision(self) -> float:
        return self.confusion.precision

    @property
    def recall(self) -> float:
        return self.confusion.recall

    @property
    def f1(self) -> float:
        return self.confusion.f1


@dataclass(frozen=True)
class PRCurve:
    """``precision[i]`` and ``recall[i]`` at ``thresholds[i]``; one more final point (1, 0)."""

    precision: tuple[float, ...]
    recall: tuple[float, ...]
    thresholds: tuple[float, ...]


def _check(truth: Sequence[bool], scores: Sequence[float]) -> None:
    if len(truth) != len(scores):
        raise ValueError(f"{len(truth)} truth values but {len(scores)} scores")


def threshold_sweep(
    truth: Sequence[bool], scores: Sequence[float], thresholds: Sequence[float] = SWEEP_THRESHOLDS
) -> list[SweepPoint]:
    """Confusion counts at each threshold (``score >= threshold`` is positive)."""
    _check(truth, scores)
    points = []
    for threshold in thresholds:
        confusion = Confusion()
        for is_true, score in zip(truth, scores, strict=True):
            confusion.add(truth=is_true, predicted=score >= threshold)
        points.append(SweepPoint(threshold, confusion))
    return points


def best_f1(points: Sequence[SweepPoint]) -> SweepPoint | None:
    """The point with the highest F1; among equals the highest threshold (fewest flags).

    None when no point has an F1 above zero: no threshold finds anything.
    """
    best: SweepPoint | None = None
    for point in points:
        if point.f1 > 0 and (best is None or (point.f1, point.threshold) >= (best.f1, best.threshold)):
            best = point
    return best


def pr_curve(truth: Sequence[bool], scores: Sequence[float]) -> PRCurve:
    """Precision and recall at every distinct score, as ``sklearn.metrics.precision_recall_curve``.

    One pass over the items sorted by score: O(n log n).
    """
    _check(truth, scores)
    positives = sum(truth)
    ranked = sorted(zip(scores, truth, strict=True), key=lambda pair: pair[0], reverse=True)
    points: list[tuple[float, float, float]] = []  # (threshold, precision, recall), highest first
    tp = 0
    for predicted, (score, is_true) in enumerate(ranked, start=1):
        tp += is_true
        if predicted == len(ranked) or ranked[predicted][0] != score:  # the last item at this score
            points.append((score, tp / predicted, tp / positives if positives else 1.0))
    points.reverse()  # thresholds ascending
    return PRCurve(
        (*(p for _, p, _ in points), 1.0),
        (*(r for _, _, r in points), 0.0),
        tuple(t for t, _, _ in points),
    )


def average_precision(curve: PRCurve) -> float:
    """Sum of precision weighted by each step's gain in recall (``average_precision_score``)."""
    total = 0.0
    # Points run from the lowest threshold (highest recall) to the final (precision 1, recall 0).
    for i in range(len(curve.recall) - 1):
        total += (curve.recall[i] - curve.recall[i + 1]) * curve.precision[i]
    return total
