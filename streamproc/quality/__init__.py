"""``streamproc quality``: labels joined with verdicts, accuracy figures, final verdicts
from human outcomes, and appeals."""

__all__: list[str] = []
