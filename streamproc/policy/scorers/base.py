"""What every scorer is: requests to build, and a score per category from the answers.

Scorers are pure: they build request bodies and read answers; the inference client sends
them. Each is small and chosen by name in the policy pack (``scorer:``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Protocol

from streamproc.inference.protocol import ModelAnswer, ModelRequest
from streamproc.policy.model import Policy
from streamproc.policy.prompt import ItemContent

__all__ = ["Scorer", "answer_shares", "logprob_request"]


class Scorer(Protocol):
    """Turns an item into model requests, and the answers into scores in [0, 1]."""

    name: ClassVar[str]

    def requests(self, policy: Policy, item: ItemContent) -> list[ModelRequest]:
        """The requests for one item (their order is the order of ``answers``)."""
        ...

    def scores(self, policy: Policy, answers: Sequence[ModelAnswer]) -> dict[str, float]:
        """Score per category id, in policy order.

        Raises:
            InferenceProtocolError: the answers do not follow the expected format; the
                item is then escalated, never approved.
        """
        ...


def answer_shares(
    alternatives: Iterable[tuple[str, float]],
    answers: Iterable[str],
    *,
    fold: Callable[[str], str] = str.lower,
) -> dict[str, float] | None:
    """Each answer's share of the probability the alternatives give to any of the answers.

    Tokens are compared stripped and folded (so " Yes", "yes" and "YES" add up). The
    alternatives are the server's top-k, so an answer missing from them is not "certainly
    not": it is at most as likely as the least likely token listed, and than the
    probability all listed tokens leave over. It gets that bound, so an unmeasured category
    never reads as certainly clean. ``None`` when none of the answers is present (the model
    did not follow the answer format).
    """
    mass = dict.fromkeys(answers, 0.0)
    smallest, listed = 1.0, 0.0
    for token, logprob in alternatives:
        if not math.isfinite(logprob):
            continue
        probability = math.exp(logprob)
        smallest, listed = min(smallest, probability), listed + probability
        key = fold(token.strip())
        if key in mass:
            mass[key] += probability
    if sum(mass.values()) <= 0.0:
        return None
    bound = max(0.0, min(smallest, 1.0 - listed))
    bounded = {answer: share or bound for answer, share in mass.items()}
    total = sum(bounded.values())
    return {answer: min(1.0, share / total) for answer, share in bounded.items()}


def logprob_request(
    messages: list[dict[str, Any]], *, max_tokens: int = 1, top_logprobs: int = 20
) -> ModelRequest:
    """A chat request for a few tokens with their alternatives: the cheap way to score."""
    return ModelRequest(
        "chat/completions",
        {
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": top_logprobs,
        },
    )
