"""Errors raised by streamproc.

Every error carries ``retriable``: the one place that handles failures decides from it
whether to retry (transient trouble with the model server) or give up for this item.

    StreamprocError
    ├── ConfigError                 bad settings or files; fix the configuration
    ├── DecodeError                 an input record is not a valid event → dead-letter topic
    │   ├── InvalidJson
    │   ├── SchemaValidationError
    │   └── UnsupportedSchemaVersion
    └── InferenceError              the model server did not give a usable answer
        ├── InferenceUnavailable    connection refused or reset          (retriable)
        ├── InferenceTimeout        no answer within the timeout         (retriable)
        ├── InferenceServerError    HTTP 429 or 5xx                      (retriable)
        ├── InferenceRequestError   HTTP 4xx: the request itself is wrong
        └── InferenceProtocolError  a 2xx answer we cannot read
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, Final

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "ConfigError",
    "DecodeError",
    "InferenceError",
    "InferenceProtocolError",
    "InferenceRequestError",
    "InferenceServerError",
    "InferenceTimeout",
    "InferenceUnavailable",
    "InvalidJson",
    "SchemaValidationError",
    "StreamprocError",
    "UnsupportedSchemaVersion",
    "describe_validation_error",
]


class StreamprocError(Exception):
    """Root of every error streamproc raises on purpose."""

    retriable: ClassVar[bool] = False
    #: Short label used in metrics and reason codes.
    kind: ClassVar[str] = "error"


class ConfigError(StreamprocError):
    """Settings or a file they point to are invalid; the message says how to fix it."""

    kind = "config"


class DecodeError(StreamprocError):
    """An input record cannot be turned into an event."""

    kind = "decode"


class InvalidJson(DecodeError):
    kind = "invalid_json"


class SchemaValidationError(DecodeError):
    kind = "schema_validation"


class UnsupportedSchemaVersion(DecodeError):
    kind = "unsupported_schema_version"


class InferenceError(StreamprocError):
    """The model server did not give a usable answer."""

    kind = "inference"


class InferenceUnavailable(InferenceError):
    retriable = True
    kind = "unavailable"


class InferenceTimeout(InferenceError):
    retriable = True
    kind = "timeout"


class InferenceServerError(InferenceError):
    retriable = True
    kind = "server_error"


class InferenceRequestError(InferenceError):
    kind = "request_error"


class InferenceProtocolError(InferenceError):
    kind = "protocol_error"


#: Stdlib dataclasses validated by pydantic (policy packs) word these two problems
#: differently from models; say them the same way whatever the validated type is.
_SAME_WORDS: Final = {
    "unexpected_keyword_argument": "Extra inputs are not permitted",
    "missing_argument": "Field required",
}


def describe_validation_error(
    exc: ValidationError,
    *,
    whole: str = "(root)",
    where: Callable[[Sequence[int | str]], str] | None = None,
    name: Callable[[Sequence[int | str]], str] | None = None,
    words: Mapping[str, str] | None = None,
    separator: str = "; ",
) -> str:
    """Every problem of a pydantic validation error as ``field.path: message``, joined.

    Args:
        exc: The error.
        whole: What a problem with no field path (the whole input) is named.
        where: Says where a field path is in the source (e.g. ``FILE:LINE``); it then
            prefixes each problem as ``WHERE: field.path: message``.
        name: Names the field at a path as the user knows it (e.g. its environment
            variable), instead of ``field.path``.
        words: Messages by pydantic error type, in place of pydantic's.
        separator: Between problems.
    """
    problems = []
    for err in exc.errors(include_url=False):
        dotted = ".".join(str(p) for p in err["loc"]) or whole
        field = name(err["loc"]) if name is not None else dotted
        said = {**_SAME_WORDS, **(words or {})}.get(err["type"], err["msg"])
        if err["type"] == "value_error" and "error" in err.get("ctx", {}):
            said = str(err["ctx"]["error"])  # our own validators' words, without "Value error, "
        problem = f"{field}: {said}"
        problems.append(f"{where(err['loc'])}: {problem}" if where is not None else problem)
    return separator.join(problems)
