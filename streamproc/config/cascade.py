"""The cascade's second model: which served model uncertain items go to (the packs say which
items, with their ``cascade`` band). Unset fields are the main model's (``INFERENCE__*``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from streamproc.config.servers import OtherServer

if TYPE_CHECKING:  # model.py imports this module
    from streamproc.config.model import InferenceSettings

__all__ = ["CascadeSettings"]


class CascadeSettings(OtherServer):
    model: Annotated[str, Field(min_length=1)] | None = Field(
        default=None,
        description="Served model name of the second model that items in a pack's cascade band go "
        "to before a decision; unset: no cascade.",
    )

    def inference(self, main: InferenceSettings) -> InferenceSettings | None:
        """The second model's client settings, the main model's where unset; None: no cascade.

        Never ``hold``: an unavailable second model sends its items to review (fail closed)
        instead of pausing consumption for every item.
        """
        if self.model is None:
            return None
        return self._client(main, self.model, on_unavailable="review")
