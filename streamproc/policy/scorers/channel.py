"""``channel``: how much likelier the item's text becomes when the model is told its category.

Small models follow instructions poorly but model text well. Instead of asking a question,
this scorer reads the log-probabilities the server assigns to the item's own tokens
(a text completion with ``echo``), once after a neutral line ("Here is an ordinary item …")
and once after each category's line ("Here is a listing selling a replica …"). A category's
evidence is the mean per-token log-likelihood gain of the item under its line over the
neutral one (the "noisy channel" direction of zero-shot classification); the score is
``sigmoid(SCALE * gain)``, so no gain reads 0.5 and ``streamproc calibrate`` maps it further.

Text only: a completion request carries no images. Every token of the item is measured, so
no category can fall outside a top-k list. Cost: one request per category plus one.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import ClassVar, Final

from streamproc.errors import InferenceProtocolError
from streamproc.inference.protocol import ModelAnswer, ModelRequest
from streamproc.policy.model import Category, Policy
from streamproc.policy.prompt import ItemContent

__all__ = ["NEUTRAL", "SCALE", "ChannelScorer", "category_line", "mean_item_logprob"]

#: Nats per token of gain that move the score from 0.5 to about 0.73.
SCALE: Final = 10.0
#: The neutral text of a pack that has none.
NEUTRAL: Final = "Here is an ordinary item from an online marketplace."


def category_line(category: Category) -> str:
    """The line a category's request starts with: its own, else its title and description."""
    return (
        category.channel_prompt
        or f"Here is an item that violates this policy. {category.title}: {category.description}"
    )


def _lines(policy: Policy) -> list[str]:
    return [policy.channel_neutral or NEUTRAL] + [category_line(c) for c in policy.categories]


def _request(line: str, text: str) -> ModelRequest:
    return ModelRequest(
        "completions",
        {
            "prompt": f"{line}\n{text}",
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": 0,
        },
    )


def mean_item_logprob(answer: ModelAnswer, start: int) -> float:
    """Mean log-probability of the echoed prompt's tokens from character ``start`` on.

    With ``echo`` the answer holds the prompt's tokens and then the one generated token,
    which is left out.
    """
    if not answer.tokens or len(answer.text_offsets) != len(answer.tokens):
        raise InferenceProtocolError("the server returned no text offsets for the echoed prompt")
    first = bisect.bisect_left(answer.text_offsets, start)  # offsets grow along the prompt
    values = [t.logprob for t in answer.tokens[first:-1]]
    total = math.fsum(values)
    if not math.isfinite(total):  # rare: leave out what the server could not compute
        values = [v for v in values if math.isfinite(v)]
        total = math.fsum(values)
    if not values:
        raise InferenceProtocolError("the server returned no log-probabilities for the item's tokens")
    return total / len(values)


class ChannelScorer:
    name: ClassVar[str] = "channel"

    def requests(self, policy: Policy, item: ItemContent) -> list[ModelRequest]:
        return [_request(line, item.text) for line in _lines(policy)]

    def scores(self, policy: Policy, answers: Sequence[ModelAnswer]) -> dict[str, float]:
        if len(answers) != len(policy.categories) + 1:
            raise InferenceProtocolError(
                f"expected {len(policy.categories) + 1} answers (neutral and one per category), "
                f"got {len(answers)}"
            )
        # The item starts after "line\n".
        means = [mean_item_logprob(a, len(line) + 1) for line, a in zip(_lines(policy), answers, strict=True)]
        neutral = means[0]
        return {
            category.id: 1.0 / (1.0 + math.exp(-SCALE * (mean - neutral)))
            for category, mean in zip(policy.categories, means[1:], strict=True)
        }
