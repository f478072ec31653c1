"""Measuring decisions against human judgement: confusion counts, precision, recall, F1."""

from streamproc.quality.confusion import Confusion, confusion_by_category

__all__ = ["Confusion", "confusion_by_category"]
