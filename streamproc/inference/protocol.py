"""What goes to the model server and what comes back: the request and answer values the
scorers build and read (the server's JSON is read in ``streamproc.inference.responses``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["EchoedPrompt", "ModelAnswer", "ModelRequest", "TokenChoice"]


@dataclass(frozen=True)
class ModelRequest:
    """One HTTP request to an OpenAI-compatible server, without the model name."""

    endpoint: Literal["chat/completions", "completions", "embeddings"]
    body: dict[str, Any]

    @property
    def prompts(self) -> int:
        """Sequences the server runs for it: a text completion may carry a list of prompts,
        an embeddings request a list of inputs."""
        prompt = self.body.get("input" if self.endpoint == "embeddings" else "prompt")
        return len(prompt) if isinstance(prompt, list) else 1

    @property
    def echoed(self) -> bool:
        """A text completion that asks for its prompt's tokens back with their log-probabilities."""
        return self.endpoint == "completions" and bool(self.body.get("echo"))


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


@dataclass(frozen=True, slots=True)
class EchoedPrompt:
    """One prompt of a text completion with ``echo``, as the server tokenised and scored it:
    each token's character offset in the prompt and its log-probability (None where the
    server computed none, as for the first token), then any generated tokens."""

    offsets: tuple[int, ...]
    logprobs: tuple[float | None, ...]


@dataclass(frozen=True)
class ModelAnswer:
    """What came back for one request."""

    text: str
    tokens: tuple[TokenChoice, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int | None = None
    seconds: float = 0.0
    #: Text completion with ``echo``: one per prompt of the request, in its order; then
    #: ``text`` and ``tokens`` stay empty (the scorers read the prompts' log-probabilities).
    prompts: tuple[EchoedPrompt, ...] = ()
    #: Embeddings request: one vector per input, in its order (the pooled hidden state).
    embeddings: tuple[tuple[float, ...], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
