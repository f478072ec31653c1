"""A pack's ``cascade`` block: which items go to a second model before a decision.

The pack says when (an uncertain band of calibrated scores) and how the second model is asked
(a scorer, and that scorer's calibration per category); the deployment says which model
(``STREAMPROC_CASCADE__MODEL``). Part of the pack file format, as streamproc.policy.model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, with_config

from streamproc.errors import ConfigError
from streamproc.policy.pack_fields import (
    PACK_FILE,
    Calibration,
    CalibrationProvenance,
    Identifier,
    ScorerName,
    SortedItems,
)

__all__ = ["Cascade", "CascadeBand", "InvalidCascade"]

_Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class InvalidCascade(ConfigError, ValueError):
    """A cascade block that breaks its own rules (a ValueError, so pydantic places it)."""


@with_config(PACK_FILE)
@dataclass(frozen=True)
class CascadeBand:
    """A calibrated score in [low, high) is uncertain."""

    low: _Probability
    high: _Probability

    def __post_init__(self) -> None:
        if not 0.0 <= self.low < self.high <= 1.0:
            raise InvalidCascade(
                f"cascade band needs 0 <= low < high <= 1, got low {self.low}, high {self.high}"
            )


@with_config(PACK_FILE)
@dataclass(frozen=True)
class Cascade:
    """An item goes to the second model when any category's calibrated score is in ``band``.

    With a ``scorer``, the second model is asked as that scorer asks (an ``embedding_probe``
    pack's second opinion comes from a prompt scorer), and ``calibration`` maps its scores to
    probabilities before the pack's thresholds (``streamproc calibrate --cascade-model``).
    Without one, the same requests go to the second model and the categories' calibrations apply.
    """

    band: CascadeBand
    scorer: ScorerName | None = None
    calibration: Annotated[
        tuple[tuple[str, Calibration], ...], SortedItems(dict[Identifier, Calibration])
    ] = ()
    #: Where ``calibration`` came from; not part of the pack's version.
    calibration_provenance: CalibrationProvenance | None = None

    def __post_init__(self) -> None:
        if self.calibration and self.scorer is None:
            raise InvalidCascade(
                "cascade.calibration applies to a cascade scorer: set cascade.scorer, or move the "
                "calibration to the categories"
            )
        if self.scorer == "embedding_probe":
            raise InvalidCascade(
                "cascade.scorer embedding_probe: the heads belong to the pack's own scorer; the "
                "second opinion needs a prompt scorer (channel, label_logprob, yes_no, llama_guard, json)"
            )

    def uncertain(self, scores: Mapping[str, float]) -> bool:
        """Some score falls in the band: the first model's answer is not decisive."""
        return any(self.band.low <= score < self.band.high for score in scores.values())
