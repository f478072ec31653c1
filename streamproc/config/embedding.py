"""The embedding server: where the ``embedding_probe`` scorer's requests go (one vLLM in
pooling mode serving a truncated backbone). Unset fields are the main model's
(``INFERENCE__*``): a deployment whose packs all use the probe needs one server only."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from streamproc.config.cascade import existing_file
from streamproc.config.checks import valid_http_url

if TYPE_CHECKING:  # model.py imports this module
    from streamproc.config.model import InferenceSettings

__all__ = ["EmbeddingSettings"]


class EmbeddingSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: Annotated[str, AfterValidator(valid_http_url)] | None = Field(
        default=None,
        description="API root of the embedding server (vLLM in pooling mode) that packs with the "
        "embedding_probe scorer use; unset: INFERENCE__BASE_URL serves them too.",
        json_schema_extra={"shown_default": "INFERENCE__BASE_URL"},
    )
    model: Annotated[str, Field(min_length=1)] | None = Field(
        default=None,
        description="Served model name of the embedding server; default: INFERENCE__MODEL.",
        json_schema_extra={"shown_default": "INFERENCE__MODEL"},
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="Bearer token of the embedding server; default: INFERENCE__API_KEY when BASE_URL is "
        "unset (the same server), else none.",
    )
    ca_file: Annotated[Path, AfterValidator(existing_file)] | None = Field(
        default=None,
        description="PEM CA file for an https embedding server; default: as API_KEY, INFERENCE__CA_FILE "
        "on the same server, else the system's CAs.",
    )
    timeout_seconds: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Per request, per attempt; default: INFERENCE__TIMEOUT_SECONDS.",
        json_schema_extra={"shown_default": "INFERENCE__TIMEOUT_SECONDS"},
    )

    def inference(self, main: InferenceSettings) -> InferenceSettings | None:
        """The embedding server's client settings, the main model's where unset; None when
        the main server serves embeddings too (no second client)."""
        if self.base_url is None and self.model is None:
            return None
        same_server = self.base_url is None
        update: dict[str, object] = {
            "model": self.model or main.model,
            "base_url": self.base_url or main.base_url,
            "api_key": self.api_key or (main.api_key if same_server else None),
            "ca_file": self.ca_file or (main.ca_file if same_server else None),
            "timeout_seconds": self.timeout_seconds or main.timeout_seconds,
        }
        return main.model_copy(update=update)
