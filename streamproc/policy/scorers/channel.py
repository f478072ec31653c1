"""``channel``: how much likelier the item's text becomes when the model is told its category.

Small models follow instructions poorly but model text well. Instead of asking a question,
this scorer reads the log-probabilities the server assigns to the item's own tokens
(a text completion with ``echo``), once after a neutral line ("Here is an ordinary item …")
and once after each category's line ("Here is a listing selling a replica …"). A category's
evidence is the mean per-token log-likelihood gain of the item under its line over the
neutral one (the "noisy channel" direction of zero-shot classification); the score is
``sigmoid(SCALE * gain)``, so no gain reads 0.5 and ``streamproc calibrate`` maps it further.

Text only: a completion request carries no images. Every token of the item is measured, so
no category can fall outside a top-k list. Cost: one request per item carrying one prompt
per category plus one (the server runs each as a sequence; the one generated token comes
from the same forward pass and is left out).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import ClassVar, Final

from streamproc.errors import InferenceProtocolError
from streamproc.inference.protocol import EchoedPrompt, ModelAnswer, ModelRequest
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


def mean_item_logprob(prompt: EchoedPrompt, start: int) -> float:
    """Mean log-probability of the echoed prompt's tokens from character ``start`` on."""
    values = prompt.logprobs[bisect.bisect_left(prompt.offsets, start) :]  # offsets grow
    try:
        total = math.fsum(values)  # type: ignore[arg-type]  # None raises, as below
    except TypeError:  # a token without a log-probability
        total = math.nan
    if not math.isfinite(total):  # rare: leave out what the server could not compute
        values = tuple(v for v in values if v is not None and math.isfinite(v))
        total = math.fsum(values)  # type: ignore[arg-type]  # None left out just above
    if not values:
        raise InferenceProtocolError("the server returned no log-probabilities for the item's tokens")
    return total / len(values)


class ChannelScorer:
    name: ClassVar[str] = "channel"

    def requests(self, policy: Policy, item: ItemContent) -> list[ModelRequest]:
        # One request, one prompt per line: one HTTP exchange and one answer to read per item;
        # the server schedules the prompts as separate sequences either way.
        return [
            ModelRequest(
                "completions",
                {
                    "prompt": [f"{line}\n{item.text}" for line in _lines(policy)],
                    "max_tokens": 1,  # 0 is not accepted by every server version
                    "temperature": 0.0,
                    "echo": True,
                    "logprobs": 0,
                },
            )
        ]

    def scores(self, policy: Policy, answers: Sequence[ModelAnswer]) -> dict[str, float]:
        lines = _lines(policy)
        if len(answers) != 1 or len(answers[0].prompts) != len(lines):
            raise InferenceProtocolError(
                f"expected one answer with {len(lines)} echoed prompts (neutral and one per category), "
                f"got {[len(a.prompts) for a in answers]}"
            )
        # Each prompt is "line\nitem": the item starts after the line and its newline.
        means = [
            mean_item_logprob(prompt, len(line) + 1)
            for line, prompt in zip(lines, answers[0].prompts, strict=True)
        ]
        neutral = means[0]
        return {
            category.id: 1.0 / (1.0 + math.exp(-SCALE * (mean - neutral)))
            for category, mean in zip(policy.categories, means[1:], strict=True)
        }
