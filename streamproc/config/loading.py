"""Reading the settings: every problem becomes one ConfigError line naming what to fix."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError

from streamproc.config.model import CONFIG_FILE_ENV, ENV_PREFIX, Settings, config_file_override
from streamproc.errors import ConfigError, describe_validation_error

__all__ = ["load_settings"]


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, turning every problem into one ConfigError line.

    ``config_file`` (``--config``) takes the place of ``STREAMPROC_CONFIG_FILE`` for this
    call only; the environment is left as it is. A problem names the environment variable
    that set the value, else the key and the YAML file, else the field (keyword overrides).
    """
    named = os.environ.get(CONFIG_FILE_ENV)
    if config_file is not None:
        _check_yaml(config_file, "config file")
    elif named:
        _check_yaml(Path(named), f"{CONFIG_FILE_ENV} names")
    file = config_file or (Path(named) if named else None)
    token = config_file_override.set(str(config_file) if config_file is not None else None)
    try:
        return Settings(**overrides)
    except SettingsError as exc:  # a value the environment source could not decode
        raise ConfigError(_undecodable_env() or f"invalid settings: {exc}") from exc
    except ValidationError as exc:
        problems = describe_validation_error(
            exc,
            whole="settings",
            name=lambda loc: _source_of(loc, file, set(overrides)),
            words={"extra_forbidden": "not a setting"},
        )
        raise ConfigError(
            f"invalid settings: {problems} (`streamproc check-config --reference` lists every setting)"
        ) from exc
    finally:
        config_file_override.reset(token)


def _check_yaml(path: Path, named_by: str) -> None:
    """The settings file must exist and hold a YAML mapping (pydantic-settings reads it later)."""
    if not path.is_file():
        raise ConfigError(f"{named_by} {path}, which does not exist or is not a file; fix the path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from exc
    if data is not None and not isinstance(data, dict):
        raise ConfigError(
            f"{path} must be a YAML mapping of sections (kafka:, inference:, ...), "
            f"not a {type(data).__name__}"
        )


def _env_names() -> set[str]:
    """Names of the environment variables set, upper case (settings are case-insensitive)."""
    return {key.upper() for key in os.environ}


def _source_of(loc: Sequence[int | str], file: Path | None, overridden: set[str]) -> str:
    """How the user set the value at ``loc``: the environment variable, or the key in the file."""
    if not loc:
        return "settings"
    section, *rest = (str(part) for part in loc)
    field = rest.pop(0) if rest else "*"
    env = f"{ENV_PREFIX}{section.upper()}__{field.upper()}"
    dotted = f"{section}.{field}"
    detail = "".join(" (the key)" if part == "[key]" else f"[{part!r}]" for part in rest)
    set_env = _env_names()
    if section in overridden:
        return f"{dotted}{detail}"
    if env in set_env or f"{ENV_PREFIX}{section.upper()}" in set_env or file is None:
        return f"{env}{detail}"
    return f"{dotted}{detail} in {file}"


def _undecodable_env() -> str | None:
    """Which list, dict or section variable is not JSON, with an example made from its value."""
    values = {key.upper(): value for key, value in os.environ.items()}
    for section_name, section_field in Settings.model_fields.items():
        section = section_field.annotation
        assert isinstance(section, type) and issubclass(section, BaseModel)  # noqa: S101
        section_env = f"{ENV_PREFIX}{section_name.upper()}"
        if section_env in values and not _is_json(values[section_env]):
            example = json.dumps({next(iter(section.model_fields)): "..."})
            return (
                f"{section_env} must be a JSON object, e.g. {example!r}; or set each setting "
                f"alone as {section_env}__<FIELD>"
            )
        for name, field in section.model_fields.items():
            env = f"{section_env}__{name.upper()}"
            kind = get_origin(field.annotation)
            if env in values and kind in {list, dict} and not _is_json(values[env]):
                return f"{env} must be JSON, e.g. {_json_example(values[env], kind)!r}"
    return None


def _is_json(value: str) -> bool:
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def _json_example(value: str, kind: Any) -> str:
    """``a.yaml,b.yaml`` → ``["a.yaml", "b.yaml"]``; ``review=0.1`` → ``{"review": 0.1}``."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if kind is list:
        return json.dumps(items or ["..."])
    pairs = [re.split(r"\s*[=:]\s*", item, maxsplit=1) for item in items]
    if not pairs or any(len(pair) != 2 for pair in pairs):
        return '{"KEY": 0.1}'
    return json.dumps({key: _number(rate) for key, rate in pairs})


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text
