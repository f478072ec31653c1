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

Messages built here and at the edges quote text the project does not control (an event's
field names, a server's answer): ``safe_text`` makes such text fit for one log line, and
``redact_url`` hides the credentials of a URL wherever it is shown.
"""

from __future__ import annotations

import re
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
    "redact_url",
    "safe_text",
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


#: Characters of untrusted text kept in a message, per quoted value.
_QUOTED_CHARS: Final = 200
#: What would end a log line, fake a new one, colour a terminal or reorder how a line reads:
#: C0 and C1 controls, DEL, the Unicode line and paragraph separators, bidi controls, and lone
#: surrogates (a log stream cannot encode them).
_UNSAFE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def safe_text(text: str, limit: int | None = _QUOTED_CHARS) -> str:
    """``text`` fit for one line of a log or an error message, whoever wrote it.

    Control and line-breaking characters are escaped (``\\n``, ``\\x1b``, ``\\u2028``), and
    beyond ``limit`` characters (None: no bound) the rest is left out and counted, as
    ``… (N more characters)``.
    """
    kept = text if limit is None or len(text) <= limit else text[:limit]
    shown = _UNSAFE.sub(_escaped, kept)
    return shown if kept is text else f"{shown}… ({len(text) - len(kept)} more characters)"


#: The userinfo of a URL (``user:password@``), with or without a scheme; the last ``@``
#: before the path ends it, as a password may hold an unescaped one.
_USERINFO: Final = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)?[^/?#]*@")
#: Query parameters that commonly carry a credential (``?api_key=``, ``&token=``, ``&sig=``).
_SECRET_PARAM: Final = re.compile(
    r"(?P<name>[?&;][^=&#]*(?:key|token|secret|passw|sig|auth|credential)[^=&#]*=)[^&#]*", re.IGNORECASE
)


def redact_url(url: str) -> str:
    """``url`` with its credentials masked, to show it: ``https://***@host/v1?token=***``.

    The userinfo goes whole (a token may be the user name) and so do the values of query
    parameters named like a key, token, secret, password or signature. Any string is taken,
    a malformed one too (a settings error quotes it). Connect with the URL itself.
    """
    masked = _USERINFO.sub(r"\g<scheme>***@", url, count=1)
    return _SECRET_PARAM.sub(r"\g<name>***", masked)


#: A problem's message is ours or pydantic's, quoting at most a value; far below this.
_MESSAGE_CHARS: Final = 1000


def describe_validation_error(
    exc: ValidationError,
    *,
    whole: str = "(root)",
    where: Callable[[Sequence[int | str]], str] | None = None,
    name: Callable[[Sequence[int | str]], str] | None = None,
    words: Mapping[str, str] | None = None,
    separator: str = "; ",
    most: int | None = None,
) -> str:
    """Every problem of a pydantic validation error as ``field.path: message``, joined.

    Field paths hold the input's own keys (an event's attribute names) and some messages
    quote input, so both pass through ``safe_text``: escaped, each bounded.

    Args:
        exc: The error.
        whole: What a problem with no field path (the whole input) is named.
        where: Says where a field path is in the source (e.g. ``FILE:LINE``); it then
            prefixes each problem as ``WHERE: field.path: message``.
        name: Names the field at a path as the user knows it (e.g. its environment
            variable), instead of ``field.path``.
        words: Messages by pydantic error type, in place of pydantic's.
        separator: Between problems.
        most: Problems described at most (None: all); the rest are counted.
    """
    errors = exc.errors(include_url=False)
    problems = []
    for err in errors[:most]:
        dotted = ".".join(safe_text(str(p)) for p in err["loc"]) or whole
        field = name(err["loc"]) if name is not None else dotted
        said = {**_SAME_WORDS, **(words or {})}.get(err["type"], err["msg"])
        if err["type"] == "value_error" and "error" in err.get("ctx", {}):
            said = str(err["ctx"]["error"])  # our own validators' words, without "Value error, "
        problem = f"{field}: {safe_text(said, _MESSAGE_CHARS)}"
        problems.append(f"{where(err['loc'])}: {problem}" if where is not None else problem)
    if most is not None and len(errors) > most:
        problems.append(f"and {len(errors) - most} more")
    return separator.join(problems)
