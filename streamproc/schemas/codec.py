"""Bytes on the wire ⇄ models, with decoding failures mapped to DecodeError kinds."""

from __future__ import annotations

from typing import Any, Final, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from streamproc.errors import (
    InvalidJson,
    SchemaValidationError,
    UnsupportedSchemaVersion,
    describe_validation_error,
    safe_text,
)
from streamproc.schemas.common import ContentType
from streamproc.schemas.listing import ListingEvent
from streamproc.schemas.video import VideoEvent

__all__ = ["EVENT_MODELS", "decode_event", "decode_record", "encode"]

EVENT_MODELS: Final[dict[ContentType, type[ListingEvent] | type[VideoEvent]]] = {
    "listing": ListingEvent,
    "video": VideoEvent,
}
_SUPPORTED_VERSIONS: Final = frozenset({1})
#: Problems named in a schema error; an event may break thousands (one per attribute), and
#: the message goes to a log line and a dead letter.
_PROBLEMS_SHOWN: Final = 10


_Model = TypeVar("_Model", bound=BaseModel)


def decode_event(content_type: ContentType, raw: bytes | None) -> ListingEvent | VideoEvent:
    """Parse one content record value (see ``decode_record``)."""
    return decode_record(EVENT_MODELS[content_type], raw, f"{content_type} event")


def decode_record(model: type[_Model], raw: bytes | None, what: str) -> _Model:
    """Parse one record value into ``model``; ``what`` names it in error messages.

    Raises:
        InvalidJson: not a JSON object.
        UnsupportedSchemaVersion: a ``schema_version`` this worker does not know.
        SchemaValidationError: a JSON object that breaks the schema; the message lists
            each offending field.
    """
    if raw is None:
        raise InvalidJson("record has no value (tombstone); expected a JSON object")
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"value is not valid JSON: {safe_text(str(exc))}") from exc
    if not isinstance(data, dict):
        raise InvalidJson(f"value is JSON {type(data).__name__}, expected an object")
    version = data.get("schema_version", 1)
    # a list or object is unhashable: a set lookup would raise TypeError, not reject it
    if isinstance(version, list | dict) or version not in _SUPPORTED_VERSIONS:
        raise UnsupportedSchemaVersion(
            f"schema_version {safe_text(repr(version))} is not supported for a {what} "
            f"(supported: {sorted(_SUPPORTED_VERSIONS)})"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = describe_validation_error(exc, most=_PROBLEMS_SHOWN)
        raise SchemaValidationError(f"{exc.error_count()} invalid field(s) in {what}: {problems}") from exc


def encode(model: BaseModel) -> bytes:
    """Compact JSON, the format of every record streamproc publishes."""
    # model_dump_json() without its decode to str (and our encode back to bytes)
    return model.__pydantic_serializer__.to_json(model)
