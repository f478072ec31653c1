"""InferenceClient: the only code that talks to the model server."""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType

import httpx
import orjson
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from streamproc.config import InferenceSettings
from streamproc.errors import (
    InferenceError,
    InferenceProtocolError,
    InferenceRequestError,
    InferenceServerError,
    InferenceTimeout,
    InferenceUnavailable,
    StreamprocError,
)
from streamproc.inference.protocol import ChatCompletionResponse, label_request
from streamproc.metrics import Metrics

__all__ = ["InferenceClient", "LabelCompletion"]


@dataclass(frozen=True)
class LabelCompletion:
    """The first token's alternatives, and what the server reported about cost."""

    top_logprobs: tuple[tuple[str, float], ...]
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int | None
    seconds: float  # all attempts, back-off included


def _is_retriable(exc: BaseException) -> bool:
    return isinstance(exc, StreamprocError) and exc.retriable


class InferenceClient:
    """One long-lived HTTP client with bounded concurrency and retries.

    Use as ``async with InferenceClient(settings, metrics) as client``. Concurrency is
    bounded by the connection pool (``max_inflight``): extra calls wait for a free
    connection instead of piling onto the server.
    """

    def __init__(
        self,
        settings: InferenceSettings,
        metrics: Metrics,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._max_backoff = max_backoff_seconds
        headers = {"content-type": "application/json"}
        if settings.api_key is not None:
            headers["authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._http = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_seconds, connect=min(5.0, settings.timeout_seconds)),
            limits=httpx.Limits(
                max_connections=settings.max_inflight,
                max_keepalive_connections=settings.max_inflight,
            ),
            transport=transport,
        )

    async def __aenter__(self) -> InferenceClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def label(self, messages: list[dict[str, str]]) -> LabelCompletion:
        """Ask for one label token; retry transient failures with jittered back-off.

        Raises:
            InferenceError: the last attempt's error, once retries are exhausted or the
                error is permanent.
        """
        started = time.perf_counter()
        body = orjson.dumps(label_request(self._settings.model, messages, self._settings.top_logprobs))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._settings.max_attempts),
            wait=wait_random_exponential(multiplier=0.2, max=self._max_backoff),
            retry=retry_if_exception(_is_retriable),
            before_sleep=self._count_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                top, prompt_tokens, completion_tokens, cached = await self._post(body)
        return LabelCompletion(
            top_logprobs=top,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_prompt_tokens=cached,
            seconds=time.perf_counter() - started,
        )

    def _count_retry(self, state: RetryCallState) -> None:
        self._metrics.inference_retries.inc()

    async def _post(self, body: bytes) -> _Read:
        metrics = self._metrics
        try:
            with metrics.model_requests_in_flight.track_inprogress(), metrics.model_request_latency.time():
                response = await self._send(body)
            return _read_completion(response)
        except InferenceError as exc:
            metrics.inference_errors.labels(kind=exc.kind).inc()
            raise

    async def _send(self, body: bytes) -> ChatCompletionResponse:
        try:
            response = await self._http.post("chat/completions", content=body)
        except httpx.TimeoutException as exc:
            raise InferenceTimeout(f"no answer from {self._settings.base_url} in time: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise InferenceUnavailable(f"cannot reach {self._settings.base_url}: {exc!r}") from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise InferenceServerError(f"HTTP {status} from model server: {response.text[:500]}")
        if status >= 400:
            raise InferenceRequestError(f"HTTP {status} from model server: {response.text[:500]}")
        try:
            return ChatCompletionResponse.model_validate_json(response.content)
        except ValidationError as exc:
            raise InferenceProtocolError(f"unreadable completion: {exc}") from exc


# (top logprobs, prompt tokens, completion tokens, cached prompt tokens)
_Read = tuple[tuple[tuple[str, float], ...], int, int, int | None]


def _read_completion(response: ChatCompletionResponse) -> _Read:
    if not response.choices or response.choices[0].logprobs is None:
        raise InferenceProtocolError("completion has no logprobs; is logprobs supported by the server?")
    content = response.choices[0].logprobs.content
    if not content:
        raise InferenceProtocolError("completion has no generated token")
    top = tuple((t.token, t.logprob) for t in content[0].top_logprobs)
    if not top:
        top = ((content[0].token, content[0].logprob),)
    usage = response.usage
    if usage is None:
        return top, 0, 0, None
    details = usage.prompt_tokens_details
    return top, usage.prompt_tokens, usage.completion_tokens, details.cached_tokens if details else None
