"""``moderation.audit.v1``: a weighted sample of verdicts for human QA."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from streamproc.schemas.common import OutboundModel
from streamproc.schemas.verdict import Verdict

__all__ = ["AuditSample"]


class AuditSample(OutboundModel):
    """A verdict drawn for audit, with what is needed to weight its label.

    An estimate over audited items weights each by ``weight`` (1 / probability) so that
    strata sampled more often (near thresholds, rare decisions) do not bias it.
    """

    schema_version: Literal[1] = 1
    verdict: Verdict
    stratum: str = Field(description="decision/category/score band the sample was drawn from.")
    probability: Annotated[float, Field(gt=0, le=1)] = Field(description="Chance this verdict was drawn.")
    weight: Annotated[float, Field(ge=1)] = Field(description="1 / probability.")
