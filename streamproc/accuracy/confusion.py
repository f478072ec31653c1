"""Per-category confusion counts and the scores derived from them. Pure: no I/O.

Moderation is multi-label: an item may violate several categories. Each category is
scored as its own binary problem (violates it or not), as scikit-learn's
``precision_recall_fscore_support(average=None)`` does on a multi-label indicator
matrix. Counts are weighted so that audit samples drawn with unequal probabilities give
unbiased estimates (weight = 1 / probability); unweighted use passes weight 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Confusion", "confusion_by_category"]


@dataclass
class Confusion:
    """Weighted counts of one binary decision (category violated or not)."""

    tp: float = 0.0
    fp: float = 0.0
    fn: float = 0.0
    tn: float = 0.0

    def add(self, *, truth: bool, predicted: bool, weight: float = 1.0) -> None:
        if truth and predicted:
            self.tp += weight
        elif predicted:
            self.fp += weight
        elif truth:
            self.fn += weight
        else:
            self.tn += weight

    @property
    def total(self) -> float:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def precision(self) -> float:
        """tp / (tp + fp); 0 when nothing was predicted (scikit-learn's zero_division=0)."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """tp / (tp + fn); 0 when nothing is truly positive."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """2 tp / (2 tp + fp + fn): the harmonic mean of precision and recall, 0 if undefined."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)


def confusion_by_category(
    pairs: Iterable[tuple[Iterable[str], Iterable[str], float]], categories: Sequence[str]
) -> dict[str, Confusion]:
    """(true categories, predicted categories, weight) per item → a Confusion per category."""
    result = {category: Confusion() for category in categories}
    for truth, predicted, weight in pairs:
        true_set, predicted_set = set(truth), set(predicted)
        for category, confusion in result.items():
            confusion.add(truth=category in true_set, predicted=category in predicted_set, weight=weight)
    return result


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0
