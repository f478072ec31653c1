"""The subset of the OpenAI chat-completions API that streamproc uses, as vLLM serves it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = [
    "ChatCompletionResponse",
    "Choice",
    "ChoiceLogprobs",
    "PromptTokensDetails",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
    "label_request",
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


class ChoiceLogprobs(_Lenient):
    content: list[TokenLogprob] | None = None


class Choice(_Lenient):
    index: int = 0
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class PromptTokensDetails(_Lenient):
    cached_tokens: int | None = None


class Usage(_Lenient):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None


class ChatCompletionResponse(_Lenient):
    id: str = ""
    model: str = ""
    choices: list[Choice]
    usage: Usage | None = None


def label_request(model: str, messages: list[dict[str, str]], top_logprobs: int) -> dict[str, object]:
    """Body asking for a single token and its alternatives: the cheapest way to score."""
    return {
        "model": model,
        "messages": messages,
        "max_tokens": 1,
        "temperature": 0.0,
        "logprobs": True,
        "top_logprobs": top_logprobs,
    }
