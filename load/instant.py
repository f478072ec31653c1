"""A model that answers at once, for measuring the worker's own cost.

Two forms: ``ZeroCostModel`` replaces the worker's model client; ``InstantServer`` is an
httpx transport answering in vLLM's wire format, so the worker's real ``InferenceClient``
(concurrency gate, retries, circuit breaker, decoding the answer) runs too.
"""

from __future__ import annotations

import functools
from pathlib import Path

import httpx
import orjson
from prometheus_client import CollectorRegistry

from load.stack import ROOT
from streamproc.config import Settings
from streamproc.decision import ModelClient
from streamproc.inference import InferenceClient
from streamproc.inference.protocol import EchoedPrompt, ModelAnswer, ModelRequest, TokenChoice
from streamproc.metrics import PrometheusWorkerMetrics
from streamproc.metrics import create as create_metrics
from streamproc.policy import PolicySet, load_policy_set
from streamproc.policy.scorers.channel import NEUTRAL
from streamproc.worker import Processor

__all__ = ["InstantServer", "ZeroCostModel", "instant_processor"]

#: Per-token log-probabilities of an echoed prompt: after the neutral text, after a category's.
NEUTRAL_LOGPROB, CATEGORY_LOGPROB = -1.0, -3.0
#: The safe answer to a label request: "Z" first, every letter far behind.
SAFE = ModelAnswer(
    text="Z",
    tokens=(TokenChoice("Z", -0.01, tuple((chr(c), -8.0) for c in range(ord("A"), ord("Z") + 1))),),
    prompt_tokens=400,
    completion_tokens=1,
    cached_prompt_tokens=380,
)


class ZeroCostModel:
    """A model client that answers instantly that the item is safe: the worker's own cost only.

    Every scorer protocol: an embeddings request gets a vector the packs' heads read as
    clean; a label request gets the safe answer; each prompt of an echoed text
    completion (the ``channel`` scorer) gets one token per four characters, likelier after a
    pack's neutral text than after any category's, so that every category scores near 0.
    """

    def __init__(self, policies: PolicySet | None = None) -> None:
        self._neutral = _neutral_lines(policies)
        self._clean = _clean_embedding(policies)

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        if request.endpoint == "embeddings":
            return ModelAnswer(text="", embeddings=(self._clean,) * request.prompts, prompt_tokens=100)
        if request.echoed:
            prompts = request.body["prompt"]
            return ModelAnswer(text="", prompts=tuple(self._echoed_prompt(p) for p in prompts))
        return SAFE

    def _echoed_prompt(self, prompt: str) -> EchoedPrompt:
        return _echoed(len(prompt), _logprob(self._neutral, prompt))


class InstantServer:
    """``httpx.MockTransport(InstantServer())``: ZeroCostModel's answers as vLLM 0.32 writes
    them (echoed prompts with every token's text, log-probability, top alternative and
    offset, then one generated token), so reading them costs what reading vLLM's costs."""

    def __init__(self, policies: PolicySet | None = None) -> None:
        self._neutral = _neutral_lines(policies)
        embedding = {"index": 0, "object": "embedding", "embedding": _clean_embedding(policies)}
        self._embedding = orjson.dumps(
            {"object": "list", "data": [embedding], "usage": {"prompt_tokens": 100, "total_tokens": 100}}
        )
        token = SAFE.tokens[0]
        self._safe = orjson.dumps(
            {
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": SAFE.text},
                        "logprobs": {
                            "content": [
                                {
                                    "token": token.token,
                                    "logprob": token.logprob,
                                    "top_logprobs": [
                                        {"token": t, "logprob": lp} for t, lp in token.top_logprobs
                                    ],
                                }
                            ]
                        },
                        "finish_reason": "length",
                    }
                ],
                "usage": {"prompt_tokens": SAFE.prompt_tokens, "completion_tokens": 1},
            }
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        if request.url.path.endswith("/embeddings"):
            return httpx.Response(200, content=self._embedding)
        if not body.get("echo"):
            return httpx.Response(200, content=self._safe)
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        choices = b",".join(
            b'{"index":%d,%s' % (i, _echoed_json(len(p), _logprob(self._neutral, p)))
            for i, p in enumerate(prompts)
        )
        tokens = sum(len(range(0, len(p), 4)) for p in prompts)
        usage = b'{"prompt_tokens":%d,"completion_tokens":%d}' % (tokens, len(prompts))
        return httpx.Response(
            200, content=b'{"object":"text_completion","choices":[%s],"usage":%s}' % (choices, usage)
        )


def instant_processor(
    settings: Settings, policies_dir: Path, *, http: bool = False
) -> tuple[Processor, PrometheusWorkerMetrics]:
    """The worker's processor and metrics with the instant model: what the overhead benchmarks
    run. With ``http`` it reaches the model through its own ``InferenceClient`` and an
    ``InstantServer``, else through ``ZeroCostModel``."""
    metrics = create_metrics(CollectorRegistry())
    policies = load_policy_set([policies_dir])
    model: ModelClient = ZeroCostModel(policies)
    if http:
        transport = httpx.MockTransport(InstantServer(policies))
        model = InferenceClient(settings.inference, metrics, transport=transport)
    processor = Processor(
        settings.topics,
        settings.audit,
        policies,
        model,
        metrics,
        model_name=settings.inference.model,
        worker_id=settings.kafka.client_id,
    )
    return processor, metrics


def _clean_embedding(policies: PolicySet | None) -> tuple[float, ...]:
    """An embedding every probe head reads as far from a violation: three standard deviations
    against the flagged head's weights (the first probe pack's heads; a plain vector if none)."""
    packs = policies or load_policy_set([ROOT / "policies"])
    probe = next((p.probe for p in packs.policies if p.probe is not None), None)
    if probe is None:
        return (0.0,) * 8
    return tuple(
        m - 3.0 * s * (1.0 if w > 0 else -1.0)
        for m, s, w in zip(probe.mean, probe.scale, probe.flagged.weights, strict=True)
    )


def _neutral_lines(policies: PolicySet | None) -> tuple[str, ...]:
    """The packs' neutral lines (the shipped packs' when none are given)."""
    packs = policies or load_policy_set([ROOT / "policies"])
    return (NEUTRAL, *(p.channel_neutral for p in packs.policies if p.channel_neutral))


def _logprob(neutral_lines: tuple[str, ...], prompt: str) -> float:
    """Every token's log-probability: likelier after a neutral line than after a category's."""
    return NEUTRAL_LOGPROB if prompt.startswith(neutral_lines) else CATEGORY_LOGPROB


@functools.lru_cache(maxsize=4096)
def _echoed(length: int, logprob: float) -> EchoedPrompt:
    """An echoed prompt of ``length`` characters (a token every 4); the same for every prompt
    of that length, so that building it costs nothing per request."""
    offsets = tuple(range(0, length, 4))
    return EchoedPrompt(offsets, (logprob,) * len(offsets))


@functools.lru_cache(maxsize=4096)
def _echoed_json(length: int, logprob: float) -> bytes:
    """An echoed choice after its index, in vLLM's layout, one generated token at the end."""
    offsets = [*range(0, length, 4), length]
    return orjson.dumps(
        {
            "text": "x" * (length + 1),
            "logprobs": {
                "text_offset": offsets,
                "token_logprobs": [None, *([logprob] * (len(offsets) - 1))],
                "tokens": ["xxxx"] * len(offsets),
                "top_logprobs": [None, *([{"xxxx": logprob}] * (len(offsets) - 1))],
            },
            "finish_reason": "length",
        }
    )[1:]
