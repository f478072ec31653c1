"""Pack-file building blocks shared by a policy and its cascade block: score calibrations,
their provenance, and the field types they are checked with (see streamproc.policy.model)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    StringConstraints,
    with_config,
)
from pydantic_core import core_schema

from streamproc.errors import ConfigError

__all__ = [
    "PACK_FILE",
    "Calibration",
    "CalibrationMethod",
    "CalibrationProvenance",
    "ContextualCalibration",
    "Finite",
    "Identifier",
    "InvalidPolicy",
    "IsotonicCalibration",
    "PlattCalibration",
    "Probability",
    "ScorerName",
    "SortedItems",
]

ScorerName = Literal["embedding_probe", "channel", "label_logprob", "yes_no", "llama_guard", "json"]

# A pack file may hold only the keys these types declare.
PACK_FILE: Final = ConfigDict(extra="forbid")

Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]*$", max_length=64)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
#: A finite number (YAML's .inf and .nan are not parameters).
Finite = Annotated[float, Field(allow_inf_nan=False)]
#: How a category's scores were calibrated; ``none`` (provenance only): thresholds alone.
CalibrationMethod = Literal["none", "platt", "isotonic", "contextual"]


class InvalidPolicy(ConfigError, ValueError):
    """A policy that breaks a rule of its own.

    A ValueError too, so that pydantic reports it at its place in the pack file.
    """


@dataclass(frozen=True)
class SortedItems:
    """Annotation: a mapping in the pack file, sorted (key, value) pairs in the policy, so
    that the policy stays hashable and its version does not depend on key order."""

    mapping: Any

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # Validated as the mapping, so that problems are named by key (lists.banned_sellers).
        return core_schema.no_info_after_validator_function(
            lambda mapping: tuple(sorted(mapping.items())), handler.generate_schema(self.mapping)
        )


@with_config(PACK_FILE)
@dataclass(frozen=True)
class PlattCalibration:
    """``p' = sigmoid(a * logit(p) + b)``, with p clipped to [1e-6, 1 - 1e-6] first.

    On the logit of the score rather than the score: a = 1, b = 0 is the identity, and
    scores piled up near 0 or 1 (as logprob scores are) stay apart.
    """

    method: Literal["platt"]
    a: Finite
    b: Finite

    def __post_init__(self) -> None:
        if not (math.isfinite(self.a) and math.isfinite(self.b)):
            raise InvalidPolicy(f"platt calibration needs finite a and b, got a={self.a}, b={self.b}")


@with_config(PACK_FILE)
@dataclass(frozen=True)
class IsotonicCalibration:
    """Piecewise-linear through ``points`` ([score, calibrated], x strictly increasing,
    y non-decreasing); scores outside the first and last x take the end values."""

    method: Literal["isotonic"]
    points: tuple[tuple[Probability, Probability], ...]

    def __post_init__(self) -> None:
        if len(self.points) < 2:
            raise InvalidPolicy(f"isotonic calibration needs at least 2 points, got {len(self.points)}")
        xs, ys = [x for x, _ in self.points], [y for _, y in self.points]
        if any(b <= a for a, b in itertools.pairwise(xs)):
            raise InvalidPolicy(f"isotonic points need strictly increasing scores (x), got {xs}")
        if any(b < a for a, b in itertools.pairwise(ys)):
            raise InvalidPolicy(f"isotonic points need non-decreasing calibrated values (y), got {ys}")


@with_config(PACK_FILE)
@dataclass(frozen=True)
class ContextualCalibration:
    """``p' = (p/b) / (p/b + (1-p)/(1-b))`` with ``bias`` b: the model's mean score for the
    category on content-free items, so that such an item scores 0.5 after calibration."""

    method: Literal["contextual"]
    bias: Annotated[float, Field(gt=0.0, lt=1.0)]

    def __post_init__(self) -> None:
        if not 0.0 < self.bias < 1.0:
            raise InvalidPolicy(f"contextual calibration needs 0 < bias < 1, got {self.bias}")


#: A category's score calibration, chosen by its ``method``.
Calibration = Annotated[
    PlattCalibration | IsotonicCalibration | ContextualCalibration, Field(discriminator="method")
]


@with_config(PACK_FILE)
@dataclass(frozen=True)
class CalibrationProvenance:
    """Where a pack's calibrated thresholds and calibrations came from (``streamproc calibrate``)."""

    #: File name of the labeled calibration split, and the SHA-256 of its bytes.
    dataset: Annotated[str, StringConstraints(min_length=1)]
    dataset_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    #: Dataset items of the pack's content type, and those the model scored (fitted on).
    items: Annotated[int, Field(ge=0)]
    scored_items: Annotated[int, Field(ge=0)]
    model: Annotated[str, StringConstraints(min_length=1)]
    scorer: ScorerName
    created_at: AwareDatetime
    method: CalibrationMethod
    #: The targets: recall at the review threshold, precision at the reject threshold.
    review_recall: Probability
    reject_precision: Probability
    #: The categories this run fitted (the others kept their thresholds and calibration).
    categories: tuple[Identifier, ...]
    #: ``streamproc X.Y.Z`` and the command's arguments.
    tool: Annotated[str, StringConstraints(min_length=1)]
    command: Annotated[str, StringConstraints(min_length=1)]

    def __post_init__(self) -> None:
        if self.scored_items > self.items:
            raise InvalidPolicy(
                f"calibration_provenance: scored_items ({self.scored_items}) exceeds items ({self.items})"
            )
