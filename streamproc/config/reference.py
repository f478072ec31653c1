"""The table of every setting (``streamproc check-config --reference``, docs/operations.md)."""

from __future__ import annotations

import json

from pydantic import BaseModel

from streamproc.config.model import ENV_PREFIX, Settings

__all__ = ["settings_reference"]


def settings_reference() -> str:
    """The configuration reference as a markdown table (kept in docs/operations.md by a test)."""
    rows = ["| environment variable | default | description |", "|---|---|---|"]
    for section_name, section_field in Settings.model_fields.items():
        section = section_field.annotation
        assert isinstance(section, type) and issubclass(section, BaseModel)  # noqa: S101
        for name, field in section.model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            if "shown_default" in extra:
                default = str(extra["shown_default"])
            elif field.default_factory is not None:
                default = json.dumps(field.get_default(call_default_factory=True))
            else:
                default = "(none)" if field.default is None else str(field.default)
            env = f"{ENV_PREFIX}{section_name.upper()}__{name.upper()}"
            description = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{env}` | `{default}` | {description} |")
    return "\n".join(rows)
