"""``moderation.dlq.v1``: input that could not be processed, with the reason."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from streamproc.schemas.common import OutboundModel

__all__ = ["DeadLetter", "DeadLetterReason"]

DeadLetterReason = Literal[
    "invalid_json",
    "schema_validation",
    "unsupported_schema_version",
    "internal_error",
    "missing_decision",
    "output_too_large",
]


class DeadLetter(OutboundModel):
    """One rejected input record: where it is, what it was and why it was rejected.

    Bounded whatever the input: the payload is a prefix of the record's value (the source
    offset locates the whole record; its size and SHA-256 identify it) and the error text is
    cut, so a letter always fits in one produce request.
    """

    schema_version: Literal[1] = 1
    source_topic: str
    source_partition: int
    source_offset: int
    key: str | None = Field(
        description="The record key, decoded as UTF-8 (invalid bytes replaced), its first 1,024 characters."
    )
    payload: str = Field(
        description="The record value (its first 16 KiB when payload_truncated), as text or base64 "
        "(see payload_encoding); empty for output_too_large."
    )
    payload_encoding: Literal["utf-8", "base64"]
    payload_bytes: int = Field(default=0, ge=0, description="Size of the whole record value in bytes.")
    payload_sha256: str = Field(default="", description="SHA-256 of the whole record value, hex.")
    payload_truncated: bool = Field(
        default=False, description="The payload is a prefix of the value: replay from the source offset."
    )
    reason: DeadLetterReason
    error_type: str = Field(description="Name of the error raised while decoding.")
    error_message: str = Field(
        description="What was wrong, with the offending fields (at most 2,000 characters)."
    )
    failed_at: AwareDatetime
    worker: str = Field(description="Client id of the worker that rejected it.")
