"""Types shared by every wire model."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

__all__ = ["ContentId", "ContentType", "InboundModel", "Locale", "OutboundModel"]

ContentType = Literal["listing", "video"]
ContentId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Locale = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$", max_length=35)]


class InboundModel(BaseModel):
    """Base of events published by upstream services.

    Unknown fields are ignored so that publishers can add optional fields without
    breaking running workers; a breaking change bumps ``schema_version``.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)


class OutboundModel(BaseModel):
    """Base of records streamproc publishes: exactly the documented fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)
