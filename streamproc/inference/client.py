"""InferenceClient: the only code that talks to the model server."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

import httpx
import orjson
from circuitbreaker import STATE_HALF_OPEN, STATE_OPEN, CircuitBreaker, CircuitBreakerError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from streamproc.config import InferenceSettings
from streamproc.errors import (
    InferenceError,
    InferenceRequestError,
    InferenceServerError,
    InferenceTimeout,
    InferenceUnavailable,
    StreamprocError,
    redact_url,
    safe_text,
)
from streamproc.inference.limiter import AdaptiveLimit, ConcurrencyGate
from streamproc.inference.protocol import ModelAnswer, ModelRequest
from streamproc.inference.responses import read_answer
from streamproc.metrics import InferenceRecorder

__all__ = ["CircuitOpen", "InferenceClient"]

log = logging.getLogger(__name__)

#: While the circuit stays open, its warning is repeated at most this often.
_CIRCUIT_WARNING_INTERVAL_SECONDS = 30.0


class CircuitOpen(InferenceUnavailable):
    """Refused without a request: the circuit is open, or its one probe is under way."""

    kind = "circuit_open"


def _is_retriable(exc: BaseException) -> bool:
    return isinstance(exc, StreamprocError) and exc.retriable


def _is_server_failure(exc_type: type[BaseException], exc: BaseException) -> bool:
    """What opens the circuit: the server is unreachable, overloaded or failing, not a bad request."""
    return isinstance(exc, InferenceError) and exc.retriable


class InferenceClient:
    """One long-lived HTTP client with adaptive concurrency, retries and a circuit breaker.

    Use as ``async with InferenceClient(settings, metrics) as client``.

    - Concurrency: at most ``AdaptiveLimit.current`` prompts are in flight (a request of
      several prompts counts each: it is as much work for the server); the limit
      follows the server's latency between ``min_inflight`` and ``max_inflight`` (the HTTP
      connection pool size).
    - Retries: transient failures (unreachable, timeout, HTTP 429/5xx) are retried with
      jittered exponential back-off, up to ``max_attempts`` per request.
    - Circuit breaker: after ``breaker_failures`` consecutive transient failures the circuit
      opens and requests fail fast (``CircuitOpen``) for ``breaker_recovery_seconds``; then
      exactly one request probes the server while the others still fail fast. ``available``
      is False until a probe succeeds.
    - Hold: with ``on_unavailable = "hold"`` a request keeps retrying while the circuit is
      not closed, instead of failing after ``max_attempts``: when the whole server is down,
      items wait for it rather than all being escalated to review; ``holding`` tells the
      pipeline to pause consumption meanwhile.
    - Review: with ``on_unavailable = "review"`` a request is not retried once the circuit
      is not closed, so while the server is down every item fails at once (and is escalated
      by the caller) without back-off waits or timeouts, at the worker's normal rate.
    """

    def __init__(
        self,
        settings: InferenceSettings,
        metrics: InferenceRecorder,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_backoff_seconds: float = 5.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._shown_url = redact_url(settings.base_url)  # for messages; httpx gets the real one
        self._metrics = metrics
        self._max_backoff = max_backoff_seconds
        self._sleep = sleep  # the back-off waits; tests count them
        self._holds = settings.on_unavailable == "hold"
        headers = {"content-type": "application/json"}
        if settings.api_key is not None:
            headers["authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self.limit = AdaptiveLimit(
            minimum=settings.min_inflight if settings.adaptive_concurrency else settings.max_inflight,
            maximum=settings.max_inflight,
        )
        self._gate = ConcurrencyGate(self.limit)
        self._breaker = CircuitBreaker(
            failure_threshold=settings.breaker_failures,
            recovery_timeout=settings.breaker_recovery_seconds,
            expected_exception=_is_server_failure,
            name=f"model server {self._shown_url}",
        )
        self._guarded_post = self._breaker.decorate(self._post)
        self._circuit_lock = threading.Lock()  # ``available`` is also read by scrapes and probes
        self._circuit_warned_at: float | None = None  # None while closed
        self._probing = False  # a half-open circuit lets one request through at a time
        metrics.watch_model(
            concurrency_limit=lambda: self.limit.current,
            prompts_in_flight=lambda: self.prompts_in_flight,
            circuit_open=lambda: not self.available,
        )
        self._http = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_seconds, connect=min(5.0, settings.timeout_seconds)),
            limits=httpx.Limits(
                max_connections=settings.max_inflight,
                max_keepalive_connections=settings.max_inflight,
            ),
            transport=transport,
            verify=_tls_verify(settings),
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

    @property
    def base_url(self) -> str:
        """The server's API root as configured, its credentials masked: for messages."""
        return self._shown_url

    @property
    def prompts_in_flight(self) -> int:
        """Prompts sent and not yet answered (what the adaptive limit counts)."""
        return self._gate.in_flight

    @property
    def available(self) -> bool:
        """False while the circuit is not closed: the server failed repeatedly and is left
        alone but for one probe now and then."""
        self._log_circuit()
        return bool(self._breaker.closed)

    @property
    def holding(self) -> bool:
        """True while items are held for the server (hold mode, circuit open): taking more
        work then only fills memory. Half-open is not holding: new items may carry the probe
        (held ones may all have been abandoned by a rebalance). In review mode it is always
        False: an open circuit fails items at once, so consumption goes on and they are
        escalated."""
        self._log_circuit()
        return self._holds and bool(self._breaker.opened)

    def _log_circuit(self) -> None:
        """WARNING when the circuit opens (again every 30 s while it stays open), INFO when
        it closes. Half-open (one request probing) still counts as open here."""
        breaker = self._breaker
        with self._circuit_lock:
            now = time.monotonic()
            if breaker.closed:
                if self._circuit_warned_at is not None:
                    self._circuit_warned_at = None
                    log.info("model server %s is answering again: circuit closed", self._shown_url)
                return
            warned = self._circuit_warned_at
            if warned is not None and now - warned < _CIRCUIT_WARNING_INTERVAL_SECONDS:
                return
            self._circuit_warned_at = now
            log.warning(
                "model server %s unavailable: circuit %s after %d consecutive failures, requests fail "
                "fast for %d s between probes; %s; last error: %s",
                self._shown_url,
                "opened" if warned is None else "still open",
                breaker.failure_count,
                self._settings.breaker_recovery_seconds,
                "items are held and consumption paused until it answers"
                if self._holds
                else "items are escalated to review without calling it",
                breaker.last_failure,
            )

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        """Send one scorer request; retry transient failures with jittered back-off.

        Raises:
            InferenceError: the last attempt's error, once retries are exhausted (or, when
                holding, once the server is back and the request still fails) or the error
                is permanent.
        """
        started = time.perf_counter()
        body = orjson.dumps({"model": self._settings.model, **request.body})
        try:  # the first attempt without the retry machinery: its set-up costs ~45 µs a call
            answer = await self._attempt(request, body)
        except StreamprocError as exc:  # what _should_retry may retry
            failed = exc
        else:
            return dataclasses.replace(answer, seconds=time.perf_counter() - started)
        # Outside the except block, so later attempts' errors are not chained to this one.
        answer = await self._retried(request, body, failed)
        return dataclasses.replace(answer, seconds=time.perf_counter() - started)

    async def _retried(self, request: ModelRequest, body: bytes, first: StreamprocError) -> ModelAnswer:
        """The attempts after a failed first one, as tenacity decides (stop, back-off, count)."""
        failed: StreamprocError | None = first
        retrying = AsyncRetrying(
            stop=self._should_stop,
            wait=wait_random_exponential(multiplier=0.2, max=self._max_backoff),
            retry=retry_if_exception(self._should_retry),
            before_sleep=self._count_retry,
            sleep=self._sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if failed is not None:  # tenacity's attempt 1 is the one that already failed
                    error, failed = failed, None
                    raise error
                return await self._attempt(request, body)
        raise AssertionError("unreachable: tenacity returns or re-raises")  # pragma: no cover

    def _should_stop(self, state: RetryCallState) -> bool:
        if self._settings.on_unavailable == "hold" and not self._breaker.closed:
            return False
        return state.attempt_number >= self._settings.max_attempts

    def _should_retry(self, exc: BaseException) -> bool:
        # In review mode a circuit that is not closed ends the request now: another attempt
        # would be refused anyway, after a back-off wait that stalls the item for nothing.
        return _is_retriable(exc) and (self._holds or self._breaker.closed)

    def _count_retry(self, state: RetryCallState) -> None:
        self._metrics.inference_retry()

    async def _attempt(self, request: ModelRequest, body: bytes) -> ModelAnswer:
        try:
            self._refuse_while_open()  # before queueing for a connection slot
            async with self._gate.slots(request.prompts):
                probe = self._refuse_while_open()  # the circuit may have opened meanwhile
                self._probing |= probe
                try:
                    return await self._guarded_post(request, body)  # type: ignore[no-any-return]
                finally:
                    if probe:
                        self._probing = False
        except CircuitBreakerError as exc:  # not reached from one event loop; kept for safety
            self._metrics.inference_error("circuit_open")
            raise CircuitOpen(f"model server left alone after repeated failures: {exc}") from exc
        finally:
            self._log_circuit()

    def _refuse_while_open(self) -> bool:
        """Raise CircuitOpen while the circuit is open or its probe is out; else return
        whether this request is the probe (the circuit is half-open)."""
        state: str = self._breaker.state
        if state == STATE_OPEN or (state == STATE_HALF_OPEN and self._probing):
            self._metrics.inference_error("circuit_open")
            raise CircuitOpen(
                f"model server left alone after repeated failures (circuit {state.replace('_', '-')}): "
                f"{self._breaker.last_failure!r}"
            )
        return bool(state == STATE_HALF_OPEN)

    async def _post(self, request: ModelRequest, body: bytes) -> ModelAnswer:
        metrics = self._metrics
        started = time.perf_counter()
        try:
            with metrics.model_request_in_flight():
                content = await self._send(request.endpoint, body)
            answer = read_answer(request, content)
        except InferenceError as exc:
            metrics.inference_error(exc.kind)
            if isinstance(exc, InferenceTimeout):  # overload is latency too
                self._observe(time.perf_counter() - started)
            raise
        self._observe(time.perf_counter() - started)
        return answer

    def _observe(self, seconds: float) -> None:
        self._metrics.model_request_latency(seconds)
        self.limit.sample(seconds, self._gate.in_flight)

    async def _send(self, endpoint: str, body: bytes) -> bytes:
        try:
            response = await self._http.post(self._url(endpoint), content=body)
        except httpx.TimeoutException as exc:
            raise InferenceTimeout(f"no answer from {self._shown_url} in time: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise InferenceUnavailable(self._unreachable(exc)) from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise InferenceServerError(f"HTTP {status} from model server: {_body(response)}")
        if status >= 400:
            raise InferenceRequestError(f"HTTP {status} from model server: {_body(response)}")
        return response.content

    @functools.cache  # noqa: B019 - two endpoints, one client per worker
    def _url(self, endpoint: str) -> httpx.URL:
        """The endpoint's full URL, parsed once: httpx would merge and parse it per request."""
        return self._http.base_url.join(endpoint)

    def _unreachable(self, exc: httpx.TransportError) -> str:
        """Why the server cannot be reached; an untrusted certificate names its setting."""
        cause = exc.__cause__ or exc.__context__
        while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"the TLS certificate of {self._shown_url} is not trusted ({cause.verify_message}); "
                "set STREAMPROC_INFERENCE__CA_FILE to the PEM file of the CA that signed it"
            )
        return f"cannot reach {self._shown_url}: {exc!r}"


def _body(response: httpx.Response) -> str:
    """An error answer's text for a message: it may echo the request's content."""
    return safe_text(response.text, 500)


def _tls_verify(settings: InferenceSettings) -> ssl.SSLContext | bool:
    """httpx's ``verify``: the CA file's context, else the system's CAs (True), or off."""
    if not settings.tls_verify:
        return False
    if settings.ca_file is not None:
        return ssl.create_default_context(cafile=str(settings.ca_file))
    return True
