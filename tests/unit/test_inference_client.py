from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from streamproc.config import InferenceSettings
from streamproc.errors import (
    InferenceProtocolError,
    InferenceRequestError,
    InferenceServerError,
    InferenceTimeout,
    InferenceUnavailable,
)
from streamproc.inference import InferenceClient
from streamproc.inference.protocol import ModelRequest
from streamproc.metrics import PrometheusWorkerMetrics
from streamproc.policy.scorers import logprob_request

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "policy"},
    {"role": "user", "content": "item"},
]
REQUEST = logprob_request(MESSAGES)


def completion(top: list[tuple[str, float]], cached: int | None = 5) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "message": {"role": "assistant", "content": top[0][0]},
                "logprobs": {
                    "content": [
                        {
                            "token": top[0][0],
                            "logprob": top[0][1],
                            "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top],
                        }
                    ]
                },
            }
        ],
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 1,
            "total_tokens": 121,
            "prompt_tokens_details": {"cached_tokens": cached} if cached is not None else None,
        },
    }


def client_with(handler: Any, metrics: PrometheusWorkerMetrics, **settings: Any) -> InferenceClient:
    settings = {"max_attempts": 3, **settings}
    config = InferenceSettings(base_url="http://model.test/v1", model="m", **settings)
    return InferenceClient(config, metrics, transport=httpx.MockTransport(handler), max_backoff_seconds=0.01)


async def test_sends_a_single_token_logprob_request_and_reads_the_answer(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=completion([("N", -0.1), ("A", -2.5)]))

    async with client_with(handler, metrics, api_key="s3cret") as client:
        result = await client.complete(REQUEST)
    body = orjson.loads(seen[0].content)
    assert seen[0].url == "http://model.test/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer s3cret"
    assert (body["max_tokens"], body["logprobs"], body["top_logprobs"], body["temperature"]) == (
        1,
        True,
        20,
        0.0,
    )
    assert body["messages"] == MESSAGES and body["model"] == "m"
    assert result.text == "N"
    assert result.tokens[0].top_logprobs == (("N", -0.1), ("A", -2.5))
    assert (result.prompt_tokens, result.completion_tokens, result.cached_prompt_tokens) == (120, 1, 5)
    assert registry.get_sample_value("streamproc_model_request_latency_seconds_count") == 1
    assert registry.get_sample_value("streamproc_model_requests_in_flight") == 0


async def test_retries_server_errors_then_succeeds(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    answers = iter(
        [httpx.Response(503, text="overloaded"), httpx.Response(200, json=completion([("N", 0.0)]))]
    )
    async with client_with(lambda request: next(answers), metrics) as client:
        result = await client.complete(REQUEST)
    assert result.tokens[0].top_logprobs == (("N", 0.0),)
    assert registry.get_sample_value("streamproc_inference_retries_total") == 1
    assert registry.get_sample_value("streamproc_inference_errors_total", {"kind": "server_error"}) == 1


@pytest.mark.parametrize(
    ("handler_error", "expected", "attempts"),
    [
        (httpx.Response(500, text="boom"), InferenceServerError, 3),
        (httpx.Response(429, text="slow down"), InferenceServerError, 3),
        (httpx.ConnectError("refused"), InferenceUnavailable, 3),
        (httpx.ReadTimeout("slow"), InferenceTimeout, 3),
        (httpx.Response(400, json={"error": "bad"}), InferenceRequestError, 1),
        (httpx.Response(200, json={"choices": []}), InferenceProtocolError, 1),
        (httpx.Response(200, text="<html>"), InferenceProtocolError, 1),
    ],
)
async def test_maps_failures_and_retries_only_transient_ones(
    metrics: PrometheusWorkerMetrics, handler_error: Any, expected: type[Exception], attempts: int
) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if isinstance(handler_error, Exception):
            raise handler_error
        return handler_error  # type: ignore[no-any-return]

    async with client_with(handler, metrics) as client:
        with pytest.raises(expected):
            await client.complete(REQUEST)
    assert calls == attempts


async def test_missing_usage_and_cache_details_are_tolerated(metrics: PrometheusWorkerMetrics) -> None:
    body = completion([("B", -0.2)], cached=None)
    del body["usage"]
    async with client_with(lambda request: httpx.Response(200, json=body), metrics) as client:
        result = await client.complete(REQUEST)
    assert (result.prompt_tokens, result.cached_prompt_tokens) == (0, None)


async def test_recorded_vllm_response_is_read_and_scored(metrics: PrometheusWorkerMetrics) -> None:
    """A real answer of vLLM 0.32 (CPU) serving SmolLM2-135M-Instruct to the listing prompt."""
    from pathlib import Path

    from streamproc.policy.scorers import LabelLogprobScorer
    from tests.factories import default_policy

    recorded = (Path(__file__).parent / "data" / "vllm-0.32-smollm2-label-response.json").read_bytes()
    async with client_with(lambda request: httpx.Response(200, content=recorded), metrics) as client:
        result = await client.complete(REQUEST)
    [token] = result.tokens
    assert len(token.top_logprobs) == 20
    assert token.token == "You"  # a weak model: the top token is not a label
    assert (result.prompt_tokens, result.cached_prompt_tokens) == (566, None)
    scores = LabelLogprobScorer().scores(default_policy("listing"), [result])
    # Labels found: N, A, F, B, C, D (and more); renormalised over the label set.
    assert max(scores, key=scores.__getitem__) == "counterfeit"
    assert 0.0 < sum(scores.values()) < 1.0  # the rest is N's share


async def test_text_completion_layout_is_read(metrics: PrometheusWorkerMetrics) -> None:
    body = {
        "choices": [
            {
                "index": 0,
                "text": "\n\nunsafe\nS1",
                "logprobs": {
                    "tokens": ["\n\n", "unsafe"],
                    "token_logprobs": [-0.01, -0.3],
                    "top_logprobs": [{"\n\n": -0.01}, {"unsafe": -0.3, "safe": -1.4}],
                },
            }
        ],
        "usage": {"prompt_tokens": 300, "completion_tokens": 4},
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=body)

    async with client_with(handler, metrics) as client:
        result = await client.complete(ModelRequest("completions", {"prompt": "p", "max_tokens": 10}))
    assert seen[0].url == "http://model.test/v1/completions"
    assert orjson.loads(seen[0].content) == {"model": "m", "prompt": "p", "max_tokens": 10}
    assert result.text == "\n\nunsafe\nS1"
    assert result.tokens[1].token == "unsafe"
    assert dict(result.tokens[1].top_logprobs) == {"unsafe": -0.3, "safe": -1.4}


async def test_circuit_opens_after_consecutive_failures_and_then_fails_fast(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    calls = 0

    def down(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("refused")

    async with client_with(
        down,
        metrics,
        max_attempts=1,
        breaker_failures=2,
        breaker_recovery_seconds=60,
        on_unavailable="review",
    ) as client:
        for _ in range(2):
            with pytest.raises(InferenceUnavailable):
                await client.complete(REQUEST)
        assert not client.available
        assert registry.get_sample_value("streamproc_model_circuit_open") == 1
        with pytest.raises(InferenceUnavailable, match="left alone"):
            await client.complete(REQUEST)
    assert calls == 2  # the third request never reached the server
    assert registry.get_sample_value("streamproc_inference_errors_total", {"kind": "circuit_open"}) == 1


async def test_holding_waits_out_an_outage_instead_of_failing(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    loop = asyncio.get_running_loop()
    back_at = loop.time() + 1.5
    calls = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if loop.time() < back_at:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json=completion([("N", 0.0)]))

    async with client_with(
        flaky, metrics, max_attempts=2, breaker_failures=2, breaker_recovery_seconds=1, on_unavailable="hold"
    ) as client:
        answers = await asyncio.gather(*(client.complete(REQUEST) for _ in range(5)))
        assert client.available
    assert all(a.text == "N" for a in answers)  # more failures than max_attempts, yet answered
    assert registry.get_sample_value("streamproc_model_circuit_open") == 0
    assert calls < 30  # while the circuit was open the server was left alone


async def test_concurrency_is_bounded_by_the_limit(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    running = peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return httpx.Response(200, json=completion([("N", 0.0)]))

    fixed = {"max_inflight": 4, "min_inflight": 1, "adaptive_concurrency": False}
    async with client_with(slow, metrics, **fixed) as client:
        await asyncio.gather(*(client.complete(REQUEST) for _ in range(40)))
        assert client.limit.current == 4
    assert peak == 4
    assert registry.get_sample_value("streamproc_model_concurrency_limit") == 4


def echoed_choice(index: int, prompt: str, logprobs: list[float | None]) -> dict[str, Any]:
    """vLLM's answer to one echoed prompt of two-character tokens, then one generated token."""
    offsets = list(range(0, len(prompt) + 1, 2))[: len(logprobs)]
    return {
        "index": index,
        "text": prompt + "!",
        "logprobs": {
            "tokens": [prompt[o : o + 2] or "!" for o in offsets],
            "token_logprobs": logprobs,
            "top_logprobs": [None] + [{"t": lp} for lp in logprobs[1:]],
            "text_offset": offsets,
        },
    }


ECHOED = ModelRequest(
    "completions", {"prompt": ["abcd", "efgh"], "max_tokens": 1, "echo": True, "logprobs": 0}
)


async def test_echoed_prompts_are_read_in_request_order_without_the_generated_token(
    metrics: PrometheusWorkerMetrics,
) -> None:
    body = {
        "choices": [  # servers may list the choices in any order
            echoed_choice(1, "efgh", [None, -2.0, -9.0]),
            echoed_choice(0, "abcd", [None, -1.0, -9.0]),
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2},
    }
    async with client_with(lambda request: httpx.Response(200, json=body), metrics) as client:
        result = await client.complete(ECHOED)
    assert [(p.offsets, p.logprobs) for p in result.prompts] == [
        ((0, 2), (None, -1.0)),
        ((0, 2), (None, -2.0)),
    ]
    assert (result.text, result.tokens, result.prompt_tokens) == ("", (), 4)


@pytest.mark.parametrize(
    "choices",
    [
        [echoed_choice(0, "abcd", [None, -1.0, -9.0])],  # a prompt left unanswered
        [echoed_choice(0, "abcd", [None, -1.0]), echoed_choice(0, "efgh", [None, -1.0])],  # twice
        [echoed_choice(0, "abcd", [None, -1.0]), {"index": 1, "text": "efgh"}],  # no log-probabilities
    ],
)
async def test_an_echoed_answer_that_does_not_match_the_prompts_is_a_protocol_error(
    metrics: PrometheusWorkerMetrics, choices: list[dict[str, Any]]
) -> None:
    body = {"choices": choices}
    async with client_with(lambda request: httpx.Response(200, json=body), metrics) as client:
        with pytest.raises(InferenceProtocolError, match="echoed"):
            await client.complete(ECHOED)


async def test_a_request_of_several_prompts_takes_as_many_slots(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    running = peak = 0
    prompts_seen: set[float | None] = set()
    body = {"choices": [echoed_choice(i, p, [None, -1.0]) for i, p in enumerate(["abcd", "efgh"])]}

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        prompts_seen.add(registry.get_sample_value("streamproc_model_prompts_in_flight"))
        await asyncio.sleep(0.01)
        running -= 1
        return httpx.Response(200, json=body)

    fixed = {"max_inflight": 5, "min_inflight": 1, "adaptive_concurrency": False}
    async with client_with(slow, metrics, **fixed) as client:
        await asyncio.gather(*(client.complete(ECHOED) for _ in range(20)))
    assert peak == 2  # two requests of two prompts fit in five slots, three do not
    assert prompts_seen == {2.0, 4.0}  # the gauge counts what the limit counts
    assert registry.get_sample_value("streamproc_model_prompts_in_flight") == 0
