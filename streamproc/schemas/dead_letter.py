"""``moderation.dlq.v1``: input that could not be processed, with the reason."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from streamproc.schemas.common import OutboundModel

__all__ = ["DeadLetter", "DeadLetterReason"]

DeadLetterReason = Literal[
    "invalid_json", "schema_validation", "unsupported_schema_version", "internal_error", "missing_decision"
]


class DeadLetter(OutboundModel):
    """One rejected input record, complete enough to inspect and replay it."""

    schema_version: Literal[1] = 1
    source_topic: str
    source_partition: int
    source_offset: int
    key: str | None = Field(description="The record key, decoded as UTF-8 (invalid bytes replaced).")
    payload: str = Field(description="The record value, as text or base64 (see payload_encoding).")
    payload_encoding: Literal["utf-8", "base64"]
    reason: DeadLetterReason
    error_type: str = Field(description="Name of the error raised while decoding.")
    error_message: str = Field(description="What was wrong, with the offending fields.")
    failed_at: AwareDatetime
    worker: str = Field(description="Client id of the worker that rejected it.")
