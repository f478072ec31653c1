"""A pack's ``cascade`` block: which items go to a second model before a decision.

The pack says when (an uncertain band of calibrated scores); the deployment says which
model (``STREAMPROC_CASCADE__MODEL``). Part of the pack file format, as streamproc.policy.model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from pydantic import ConfigDict, Field, with_config

from streamproc.errors import ConfigError

__all__ = ["Cascade", "CascadeBand", "InvalidCascade"]

_PACK_FILE = ConfigDict(extra="forbid")
_Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class InvalidCascade(ConfigError, ValueError):
    """A cascade block that breaks its own rules (a ValueError, so pydantic places it)."""


@with_config(_PACK_FILE)
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


@with_config(_PACK_FILE)
@dataclass(frozen=True)
class Cascade:
    """An item goes to the second model when any category's calibrated score is in ``band``."""

    band: CascadeBand

    def uncertain(self, scores: Mapping[str, float]) -> bool:
        """Some score falls in the band: the first model's answer is not decisive."""
        return any(self.band.low <= score < self.band.high for score in scores.values())
