"""``moderation.labels.v1``: human judgements of content, from QA audits, reviews and appeals."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, StringConstraints

from streamproc.schemas.common import ContentId, ContentType, InboundModel
from streamproc.schemas.verdict import Decision, LabelSource

__all__ = ["LabelEvent"]

CategoryId = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]*$", max_length=64)]


class LabelEvent(InboundModel):
    """One person's judgement of one revision of one item, keyed by ``content_id``."""

    schema_version: Literal[1] = 1
    label_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(
        description="Unique per judgement; a redelivered label carries the same id."
    )
    content_type: ContentType
    content_id: ContentId
    revision: Annotated[int, Field(ge=0)]
    true_categories: Annotated[list[CategoryId], Field(max_length=25)] = Field(
        description="Policy categories the item violates; empty when it violates none."
    )
    decision: Decision | None = Field(
        default=None,
        description="The reviewer's decision (approve or reject); required for review and "
        "appeal outcomes, which settle the item for enforcement.",
    )
    labeler_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    source: LabelSource
    created_at: AwareDatetime
