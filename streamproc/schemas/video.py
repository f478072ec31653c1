"""``content.videos.v1``: a new or edited short video."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, HttpUrl, StringConstraints

from streamproc.schemas.common import ContentId, InboundModel, Locale

__all__ = ["Keyframe", "VideoEvent"]


class Keyframe(BaseModel):
    """One still image taken from the video."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrl
    timestamp_seconds: Annotated[float, Field(ge=0)]


class VideoEvent(InboundModel):
    """A video as the platform publishes it, keyed by ``video_id``."""

    schema_version: Literal[1] = 1
    video_id: ContentId
    revision: Annotated[int, Field(ge=0)]
    creator_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    caption: Annotated[str, StringConstraints(max_length=5_000)] = ""
    transcript: Annotated[str, StringConstraints(max_length=50_000)] = Field(
        default="", description="Speech recognised in the audio track (ASR)."
    )
    ocr_text: Annotated[str, StringConstraints(max_length=20_000)] = Field(
        default="", description="Text recognised in the frames (OCR)."
    )
    keyframes: Annotated[list[Keyframe], Field(max_length=200)] = Field(default_factory=list)
    duration_seconds: Annotated[float, Field(gt=0, le=86_400)]
    linked_product_ids: Annotated[
        list[Annotated[str, StringConstraints(max_length=128)]], Field(max_length=100)
    ] = Field(default_factory=list, description="Listings the video links to.")
    locale: Locale = "en-US"
    audience: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="Expected reach (followers, impressions); ranks the item in the review queue.",
    )
    created_at: AwareDatetime

    # What every content event says the same way, so callers never ask which one it is.
    # Properties, not fields: the wire format stays as publishers write it.
    @property
    def content_type(self) -> Literal["video"]:
        return "video"

    @property
    def content_id(self) -> str:
        """``video_id``."""
        return self.video_id

    @property
    def owner_id(self) -> str:
        """``creator_id``."""
        return self.creator_id
