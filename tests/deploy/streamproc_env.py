"""The STREAMPROC_* variables that deployment files set: real settings, with values they accept."""

from __future__ import annotations

import os
from collections.abc import Mapping
from unittest import mock

from pydantic import BaseModel

from streamproc.config import Settings, load_settings
from streamproc.errors import ConfigError

PREFIX = "STREAMPROC_"


def setting_names() -> set[str]:
    """Every settings variable, as `streamproc check-config --reference` lists them."""
    names = set()
    for section_name, section_field in Settings.model_fields.items():
        section = section_field.annotation
        assert isinstance(section, type) and issubclass(section, BaseModel)
        names |= {f"{PREFIX}{section_name.upper()}__{field.upper()}" for field in section.model_fields}
    return names


def secret_setting_names() -> set[str]:
    """The settings that hold secrets (SecretStr): given from Secrets, never from a ConfigMap."""
    names = set()
    for section_name, section_field in Settings.model_fields.items():
        section = section_field.annotation
        assert isinstance(section, type) and issubclass(section, BaseModel)
        for field_name, field in section.model_fields.items():
            if "SecretStr" in repr(field.annotation):
                names.add(f"{PREFIX}{section_name.upper()}__{field_name.upper()}")
    return names


def settings_from(env: Mapping[str, str]) -> Settings:
    """The settings a process with exactly these STREAMPROC_* variables would load.

    Fails the test naming an unknown variable or a value the settings reject.
    """
    unknown = sorted(name for name in env if name.startswith(PREFIX) and name not in setting_names())
    assert not unknown, f"not settings (see `streamproc check-config --reference`): {unknown}"
    clean = {name: value for name, value in os.environ.items() if not name.startswith(PREFIX)}
    with mock.patch.dict(os.environ, {**clean, **env}, clear=True):
        try:
            return load_settings()
        except ConfigError as exc:
            raise AssertionError(f"the settings reject {dict(env)}: {exc}") from exc
