"""``moderation.appeals.v1``: a seller or creator appeals an enforced decision."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, StringConstraints

from streamproc.schemas.common import ContentId, ContentType, InboundModel

__all__ = ["AppealEvent"]


class AppealEvent(InboundModel):
    """One appeal of the live verdict of one content revision, keyed by ``content_id``."""

    schema_version: Literal[1] = 1
    appeal_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(
        description="Unique per appeal; a redelivered appeal carries the same id."
    )
    content_type: ContentType
    content_id: ContentId
    revision: Annotated[int, Field(ge=0)] = Field(description="The revision whose verdict is appealed.")
    seller_statement: Annotated[str, StringConstraints(max_length=5000)] = Field(
        default="",
        description="What the seller or creator says, for the human reviewer. Untrusted: never "
        "shown to the model.",
    )
    appellant_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(
        description="The seller or creator who appeals."
    )
    created_at: AwareDatetime
