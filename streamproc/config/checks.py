"""Checks of setting values that pydantic's types do not make (the CLI options reuse them)."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AfterValidator, AnyHttpUrl, PlainSerializer, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from streamproc.errors import redact_url

__all__ = [
    "HttpUrlSetting",
    "check_bootstrap_servers",
    "lowercase",
    "valid_bootstrap_servers",
    "valid_http_url",
]


def check_bootstrap_servers(value: str) -> str:
    """``value`` as a comma-separated HOST:PORT list (port 1-65535), spaces dropped.

    Raises:
        ValueError: Saying which entry is wrong (the ``--bootstrap`` options show it as is).
    """
    entries = [entry.strip() for entry in value.split(",")]
    if not all(entries):
        raise ValueError(f"{value!r} is not a comma-separated HOST:PORT list, e.g. kafka-1:9092,kafka-2:9092")
    for entry in entries:
        host, _, port = entry.rpartition(":")
        if not host or not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"{entry!r} is not HOST:PORT with a port from 1 to 65535, e.g. kafka-1:9092")
    return ",".join(entries)


def valid_bootstrap_servers(value: str) -> str:
    try:
        return check_bootstrap_servers(value)
    except ValueError as exc:  # a custom error: pydantic words it as is, without "Value error, "
        raise PydanticCustomError("bootstrap_servers", str(exc)) from exc


_HTTP_URL: Final = TypeAdapter(AnyHttpUrl)


def valid_http_url(value: str) -> str:
    """``value`` unchanged (AnyHttpUrl would add a trailing slash), if it is an http(s) URL."""
    try:
        _HTTP_URL.validate_python(value)
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]["msg"]
        raise PydanticCustomError(
            "http_url", f"{redact_url(value)!r} is not an http(s) URL ({problem}), e.g. http://vllm:8000/v1"
        ) from exc
    return value


#: An http(s) URL setting: kept as given (clients connect with it, credentials and all) and
#: dumped to JSON (`check-config`) with its credentials masked, as SecretStr fields are.
HttpUrlSetting = Annotated[str, AfterValidator(valid_http_url), PlainSerializer(redact_url, when_used="json")]


def lowercase(value: object) -> object:
    """Before validation: names such as log levels are accepted in any case."""
    return value.lower() if isinstance(value, str) else value
