"""The subset of the OpenAI chat and text completion APIs that streamproc reads, as vLLM
serves them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = [
    "ChatLogprobs",
    "CompletionLogprobs",
    "CompletionResponse",
    "Message",
    "PromptTokensDetails",
    "ResponseChoice",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
]


class _Lenient(BaseModel):
    # Servers add fields over time; read only what we need.
    model_config = ConfigDict(extra="ignore", frozen=True)


class TopLogprob(_Lenient):
    token: str
    logprob: float


class TokenLogprob(_Lenient):
    token: str
    logprob: float
    top_logprobs: list[TopLogprob] = []


class ChatLogprobs(_Lenient):
    """Chat API: one entry per generated token."""

    content: list[TokenLogprob] | None = None


class CompletionLogprobs(_Lenient):
    """Text completion API (legacy layout): parallel lists per generated token."""

    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] | None = None


class Message(_Lenient):
    content: str | None = None


class ResponseChoice(_Lenient):
    index: int = 0
    message: Message | None = None  # chat
    text: str | None = None  # text completion
    logprobs: ChatLogprobs | CompletionLogprobs | None = None
    finish_reason: str | None = None


class PromptTokensDetails(_Lenient):
    cached_tokens: int | None = None


class Usage(_Lenient):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None


class CompletionResponse(_Lenient):
    id: str = ""
    model: str = ""
    choices: list[ResponseChoice]
    usage: Usage | None = None
