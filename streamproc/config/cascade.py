"""The cascade's second model: which served model uncertain items go to (the packs say which
items, with their ``cascade`` band). Unset fields are the main model's (``INFERENCE__*``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr
from pydantic_core import PydanticCustomError

from streamproc.config.checks import valid_http_url

if TYPE_CHECKING:  # model.py imports this module
    from streamproc.config.model import InferenceSettings

__all__ = ["CascadeSettings", "existing_file"]


def existing_file(value: Path) -> Path:
    if not value.is_file():
        raise PydanticCustomError("file", f"{value} is not a file")
    return value


class CascadeSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: Annotated[str, Field(min_length=1)] | None = Field(
        default=None,
        description="Served model name of the second model that items in a pack's cascade band go "
        "to before a decision; unset: no cascade.",
    )
    base_url: Annotated[str, AfterValidator(valid_http_url)] | None = Field(
        default=None,
        description="API root of the second model's server; default: INFERENCE__BASE_URL.",
        json_schema_extra={"shown_default": "INFERENCE__BASE_URL"},
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="Bearer token of the second model's server; default: INFERENCE__API_KEY when "
        "BASE_URL is unset (the same server), else none.",
    )
    ca_file: Annotated[Path, AfterValidator(existing_file)] | None = Field(
        default=None,
        description="PEM CA file for an https second server; default: as API_KEY, INFERENCE__CA_FILE "
        "on the same server, else the system's CAs.",
    )
    timeout_seconds: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Per request, per attempt; default: INFERENCE__TIMEOUT_SECONDS.",
        json_schema_extra={"shown_default": "INFERENCE__TIMEOUT_SECONDS"},
    )

    def inference(self, main: InferenceSettings) -> InferenceSettings | None:
        """The second model's client settings, the main model's where unset; None: no cascade.

        Never ``hold``: an unavailable second model sends its items to review (fail closed)
        instead of pausing consumption for every item.
        """
        if self.model is None:
            return None
        same_server = self.base_url is None
        update: dict[str, object] = {
            "model": self.model,
            "base_url": self.base_url or main.base_url,
            "api_key": self.api_key or (main.api_key if same_server else None),
            "ca_file": self.ca_file or (main.ca_file if same_server else None),
            "timeout_seconds": self.timeout_seconds or main.timeout_seconds,
            "on_unavailable": "review",
        }
        return main.model_copy(update=update)
