"""One model client over the servers of a deployment: embeddings requests go to the
embedding server (vLLM in pooling mode) when it is a server of its own, every other
request to the generative server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from streamproc.config import InferenceSettings
from streamproc.inference.client import InferenceClient
from streamproc.inference.protocol import ModelAnswer, ModelRequest
from streamproc.metrics import InferenceRecorder

__all__ = ["ModelRouter", "open_router"]


class ModelRouter:
    """Routes each request by its endpoint; both clients keep their own limits and circuits."""

    def __init__(self, generative: InferenceClient, embedding: InferenceClient | None = None) -> None:
        self._generative = generative
        self._embedding = embedding

    def _clients(self) -> tuple[InferenceClient, ...]:
        return (self._generative,) if self._embedding is None else (self._generative, self._embedding)

    async def aclose(self) -> None:
        for client in self._clients():
            await client.aclose()

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        if request.endpoint == "embeddings" and self._embedding is not None:
            return await self._embedding.complete(request)
        return await self._generative.complete(request)

    @property
    def available(self) -> bool:
        """False while either server's circuit is not closed."""
        return all(client.available for client in self._clients())

    @property
    def holding(self) -> bool:
        """True while either client holds items for its server (see InferenceClient.holding)."""
        return any(client.holding for client in self._clients())

    @property
    def concurrency_limit(self) -> int:
        """The clients' adaptive limits together."""
        return sum(client.limit.current for client in self._clients())

    @property
    def prompts_in_flight(self) -> int:
        return sum(client.prompts_in_flight for client in self._clients())

    @property
    def unavailable(self) -> list[str]:
        """API roots of the servers whose circuit is open (credentials masked)."""
        return [client.base_url for client in self._clients() if not client.available]


@contextlib.asynccontextmanager
async def open_router(
    generative: InferenceSettings, embedding: InferenceSettings | None, metrics: InferenceRecorder
) -> AsyncIterator[ModelRouter]:
    """A router over clients of these servers (``embedding`` None: the generative server
    answers embeddings requests too), closed on the way out."""
    router = ModelRouter(
        InferenceClient(generative, metrics),
        InferenceClient(embedding, metrics) if embedding is not None else None,
    )
    try:
        yield router
    finally:
        await router.aclose()
