"""One binary question beside the per-category figures: are violating items caught at all?

An item *violates* when a person judged it to violate any category (its true categories
are not empty); it is *flagged* when its decision is not approve (review or reject),
whatever categories the verdict names: a rule that sends an item to review without naming
a category still catches it. Counted in a ``Confusion`` (weighted, as the categories are),
so precision, recall and F1 are the same functions, checked against scikit-learn's binary
``precision_recall_fscore_support``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from streamproc.accuracy.confusion import Confusion
from streamproc.schemas import Decision

__all__ = ["is_flagged", "violates", "violation_confusion"]


def violates(true_categories: Collection[str]) -> bool:
    """The item violates some category."""
    return bool(true_categories)


def is_flagged(decision: Decision) -> bool:
    """The decision holds the item back (review or reject)."""
    return decision != "approve"


def violation_confusion(items: Iterable[tuple[Collection[str], Decision, float]]) -> Confusion:
    """(true categories, decision, weight) per item → violating against flagged, weighted."""
    confusion = Confusion()
    for truth, decision, weight in items:
        confusion.add(truth=violates(truth), predicted=is_flagged(decision), weight=weight)
    return confusion
