"""The subset of the OpenAI chat, text completion and embeddings answers that streamproc reads, as vLLM
serves them, decoded straight from the response bytes into ``ModelAnswer``.

msgspec decodes into typed structs and skips every field not declared here without
building it. That matters for echoed prompts: their answer lists every prompt token with
its text and top alternatives, of which the scorer needs only the offsets and
log-probabilities (a seventh of the CPU of reading it all; load/RESULTS.md).
"""

from __future__ import annotations

import bisect
from typing import TypeVar

import msgspec

from streamproc.errors import InferenceProtocolError
from streamproc.inference.protocol import EchoedPrompt, ModelAnswer, ModelRequest, TokenChoice

__all__ = ["read_answer"]


class _TopLogprob(msgspec.Struct, frozen=True):
    token: str
    logprob: float


class _TokenLogprob(msgspec.Struct, frozen=True):
    token: str
    logprob: float
    top_logprobs: list[_TopLogprob] = []


class _ChatLogprobs(msgspec.Struct, frozen=True):
    """Chat API: one entry per generated token."""

    content: list[_TokenLogprob] | None = None


class _Message(msgspec.Struct, frozen=True):
    content: str | None = None


class _ChatChoice(msgspec.Struct, frozen=True):
    message: _Message | None = None
    logprobs: _ChatLogprobs | None = None


class _CompletionLogprobs(msgspec.Struct, frozen=True):
    """Text completion API (legacy layout): parallel lists per generated token."""

    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] | None = None


class _CompletionChoice(msgspec.Struct, frozen=True):
    text: str | None = None
    logprobs: _CompletionLogprobs | None = None


class _EchoedLogprobs(msgspec.Struct, frozen=True):
    """An echoed prompt: only what the scorer reads (not the tokens' text or alternatives)."""

    token_logprobs: tuple[float | None, ...] = ()
    text_offset: tuple[int, ...] = ()


class _EchoedChoice(msgspec.Struct, frozen=True):
    index: int = 0
    logprobs: _EchoedLogprobs | None = None


class _PromptTokensDetails(msgspec.Struct, frozen=True):
    cached_tokens: int | None = None


class _Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptTokensDetails | None = None


class _ChatResponse(msgspec.Struct, frozen=True):
    choices: list[_ChatChoice]
    usage: _Usage | None = None


class _CompletionResponse(msgspec.Struct, frozen=True):
    choices: list[_CompletionChoice]
    usage: _Usage | None = None


class _EchoedResponse(msgspec.Struct, frozen=True):
    choices: list[_EchoedChoice]
    usage: _Usage | None = None


class _Embedding(msgspec.Struct, frozen=True):
    embedding: tuple[float, ...]
    index: int = 0


class _EmbeddingResponse(msgspec.Struct, frozen=True):
    data: list[_Embedding]
    usage: _Usage | None = None


_CHAT = msgspec.json.Decoder(_ChatResponse)
_COMPLETION = msgspec.json.Decoder(_CompletionResponse)
_ECHOED = msgspec.json.Decoder(_EchoedResponse)
_EMBEDDINGS = msgspec.json.Decoder(_EmbeddingResponse)


def read_answer(request: ModelRequest, content: bytes) -> ModelAnswer:
    """The answer to ``request`` from the server's response body.

    Raises:
        InferenceProtocolError: the body is not the answer such a request gets.
    """
    try:
        if request.endpoint == "embeddings":
            return _embeddings(_EMBEDDINGS.decode(content), request.prompts)
        if request.echoed:
            return _echoed(_ECHOED.decode(content), request.body["prompt"])
        if request.endpoint == "completions":
            return _completion(_COMPLETION.decode(content))
        return _chat(_CHAT.decode(content))
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise InferenceProtocolError(f"unreadable completion: {exc}") from exc


def _chat(response: _ChatResponse) -> ModelAnswer:
    choice = _first(response.choices)
    tokens: tuple[TokenChoice, ...] = ()
    if choice.logprobs is not None and choice.logprobs.content:
        tokens = tuple(
            TokenChoice(t.token, t.logprob, tuple((a.token, a.logprob) for a in t.top_logprobs))
            for t in choice.logprobs.content
        )
    text = choice.message.content if choice.message is not None else None
    return _answer(response.usage, text=text or "", tokens=tokens)


def _completion(response: _CompletionResponse) -> ModelAnswer:
    choice = _first(response.choices)
    tokens: tuple[TokenChoice, ...] = ()
    logprobs = choice.logprobs
    if logprobs is not None and logprobs.tokens:
        tops = logprobs.top_logprobs or [None] * len(logprobs.tokens)
        tokens = tuple(
            TokenChoice(token, lp if lp is not None else float("-inf"), tuple((top or {}).items()))
            for token, lp, top in zip(logprobs.tokens, logprobs.token_logprobs, tops, strict=False)
        )
    return _answer(response.usage, text=choice.text or "", tokens=tokens)


def _echoed(response: _EchoedResponse, prompt: str | list[str]) -> ModelAnswer:
    """Each prompt's own tokens: anything generated after it is left out."""
    prompts = prompt if isinstance(prompt, list) else [prompt]
    choices = sorted(response.choices, key=lambda c: c.index)  # one per prompt
    if [c.index for c in choices] != list(range(len(prompts))):
        raise InferenceProtocolError(
            f"expected one echoed choice per prompt (indexes 0 to {len(prompts) - 1}), got "
            f"{[c.index for c in choices]}"
        )
    echoed = []
    for text, choice in zip(prompts, choices, strict=True):
        logprobs = choice.logprobs
        if (
            logprobs is None
            or not logprobs.text_offset
            or len(logprobs.text_offset) != len(logprobs.token_logprobs)
        ):
            raise InferenceProtocolError(
                f"echoed prompt {choice.index} came back without a log-probability and offset per token"
            )
        end = bisect.bisect_left(logprobs.text_offset, len(text))
        echoed.append(EchoedPrompt(logprobs.text_offset[:end], logprobs.token_logprobs[:end]))
    return _answer(response.usage, text="", prompts=tuple(echoed))


def _embeddings(response: _EmbeddingResponse, inputs: int) -> ModelAnswer:
    data = sorted(response.data, key=lambda d: d.index)
    if [d.index for d in data] != list(range(inputs)):
        raise InferenceProtocolError(
            f"expected one embedding per input (indexes 0 to {inputs - 1}), got {[d.index for d in data]}"
        )
    if len({len(d.embedding) for d in data}) != 1 or not data[0].embedding:
        raise InferenceProtocolError("the server returned empty embeddings or embeddings of different widths")
    return _answer(response.usage, text="", embeddings=tuple(d.embedding for d in data))


_Choice = TypeVar("_Choice")


def _first(choices: list[_Choice]) -> _Choice:
    if not choices:
        raise InferenceProtocolError("completion has no choices")
    return choices[0]


def _answer(
    usage: _Usage | None,
    *,
    text: str,
    tokens: tuple[TokenChoice, ...] = (),
    prompts: tuple[EchoedPrompt, ...] = (),
    embeddings: tuple[tuple[float, ...], ...] = (),
) -> ModelAnswer:
    details = usage.prompt_tokens_details if usage is not None else None
    return ModelAnswer(
        text=text,
        tokens=tokens,
        prompt_tokens=usage.prompt_tokens if usage is not None else 0,
        completion_tokens=usage.completion_tokens if usage is not None else 0,
        cached_prompt_tokens=details.cached_tokens if details is not None else None,
        prompts=prompts,
        embeddings=embeddings,
    )
