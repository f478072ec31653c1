"""Measuring decisions against human judgement: confusion counts, precision, recall, F1,
threshold sweeps and precision-recall curves. Pure; shared by quality and evaluation."""

from streamproc.accuracy.confusion import Confusion, confusion_by_category
from streamproc.accuracy.violation import is_flagged, violates, violation_confusion

__all__ = ["Confusion", "confusion_by_category", "is_flagged", "violates", "violation_confusion"]
