"""A model server other than the main one (``INFERENCE__*``): the cascade's second model, the
embedding server. Unset fields are the main server's; its credentials only on the same server."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr
from pydantic_core import PydanticCustomError

from streamproc.config.checks import HttpUrlSetting

if TYPE_CHECKING:  # model.py imports this module
    from streamproc.config.model import InferenceSettings

__all__ = ["OtherServer", "existing_file"]


def existing_file(value: Path) -> Path:
    if not value.is_file():
        raise PydanticCustomError("file", f"{value} is not a file")
    return value


class OtherServer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: HttpUrlSetting | None = Field(
        default=None,
        description="API root of this server; default: INFERENCE__BASE_URL (the same server).",
        json_schema_extra={"shown_default": "INFERENCE__BASE_URL"},
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="Bearer token of this server; default: INFERENCE__API_KEY when BASE_URL is unset "
        "(the same server), else none.",
    )
    ca_file: Annotated[Path, AfterValidator(existing_file)] | None = Field(
        default=None,
        description="PEM CA file for an https server; default: as API_KEY, INFERENCE__CA_FILE on the "
        "same server, else the system's CAs.",
    )
    timeout_seconds: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Per request, per attempt; default: INFERENCE__TIMEOUT_SECONDS.",
        json_schema_extra={"shown_default": "INFERENCE__TIMEOUT_SECONDS"},
    )

    def _client(self, main: InferenceSettings, model: str, **update: object) -> InferenceSettings:
        """The main client's settings with this server's in place."""
        same_server = self.base_url is None
        return main.model_copy(
            update={
                "model": model,
                "base_url": self.base_url or main.base_url,
                "api_key": self.api_key or (main.api_key if same_server else None),
                "ca_file": self.ca_file or (main.ca_file if same_server else None),
                "timeout_seconds": self.timeout_seconds or main.timeout_seconds,
                **update,
            }
        )
