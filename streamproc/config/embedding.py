"""The embedding server: where the ``embedding_probe`` scorer's requests go (one vLLM in
pooling mode serving a truncated backbone). Unset fields are the main model's
(``INFERENCE__*``): a deployment whose packs all use the probe needs one server only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from streamproc.config.servers import OtherServer

if TYPE_CHECKING:  # model.py imports this module
    from streamproc.config.model import InferenceSettings

__all__ = ["EmbeddingSettings"]


class EmbeddingSettings(OtherServer):
    model: Annotated[str, Field(min_length=1)] | None = Field(
        default=None,
        description="Served model name of the embedding server (vLLM in pooling mode) that packs with "
        "the embedding_probe scorer use; default: INFERENCE__MODEL.",
        json_schema_extra={"shown_default": "INFERENCE__MODEL"},
    )

    def inference(self, main: InferenceSettings) -> InferenceSettings | None:
        """The embedding server's client settings, the main model's where unset; None when
        the main server serves embeddings too (no second client)."""
        if self.base_url is None and self.model is None:
            return None
        return self._client(main, self.model or main.model)
