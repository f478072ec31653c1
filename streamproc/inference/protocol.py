"""What goes to the model server and what comes back: the request and answer values the
scorers build and read, and the subset of the OpenAI chat and text completion APIs that
streamproc reads, as vLLM serves them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "ChatLogprobs",
    "CompletionLogprobs",
    "CompletionResponse",
    "Message",
    "ModelAnswer",
    "ModelRequest",
    "PromptTokensDetails",
    "ResponseChoice",
    "TokenChoice",
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
    #: Character offset of each token in the prompt plus the generated text (with ``echo``).
    text_offset: list[int] = []


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


@dataclass(frozen=True)
class ModelRequest:
    """One HTTP request to an OpenAI-compatible server, without the model name."""

    endpoint: Literal["chat/completions", "completions"]
    body: dict[str, Any]


@dataclass(frozen=True)
class TokenChoice:
    """One generated token and the alternatives the server reported for its position."""

    token: str
    logprob: float
    top_logprobs: tuple[tuple[str, float], ...] = ()

    @property
    def alternatives(self) -> tuple[tuple[str, float], ...]:
        """The reported alternatives, or the token itself when the server sent none."""
        return self.top_logprobs or ((self.token, self.logprob),)


@dataclass(frozen=True)
class ModelAnswer:
    """What came back for one request."""

    text: str
    tokens: tuple[TokenChoice, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int | None = None
    seconds: float = 0.0
    #: Text completion with ``echo``: each token's character offset (parallel to ``tokens``).
    text_offsets: tuple[int, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
