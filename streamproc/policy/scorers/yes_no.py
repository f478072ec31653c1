"""``yes_no``: one request per category, answered Yes or No (ShieldGemma / Granite Guardian style).

Each category gets its own one-token request. All requests of an item share the longest
possible prefix, so the server's prefix cache computes the policy and the item once:

* the system message (the policy preamble and a fixed note about the item markers) is
  identical for every item and every category;
* the user turn starts with the delimited item (and its images), identical for every
  category of the item;
* only the question at the end differs: it names one category (title, description,
  examples) and asks "Does the item violate this policy? Answer Yes or No."

A category's score is P(yes) / (P(yes) + P(no)) over the first token's ``top_logprobs``,
summing the variants of each word (" Yes", "yes", "YES"; case and surrounding spaces are
ignored) and ignoring non-finite log-probabilities. When neither word is among them, the
model did not follow the answer format: an error naming the category, never an approval.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from streamproc.errors import InferenceProtocolError
from streamproc.inference.protocol import ModelAnswer, ModelRequest
from streamproc.policy.model import Category, Policy
from streamproc.policy.prompt import DATA_NOTICE, ItemContent, category_lines, user_content
from streamproc.policy.scorers.base import answer_shares, logprob_request

__all__ = ["YesNoScorer", "question", "system_prompt", "yes_probability"]


def system_prompt(policy: Policy) -> str:
    """The part shared by every request of the policy: no category is named here."""
    return "\n".join(
        [
            policy.preamble,
            "",
            DATA_NOTICE,
            "After the item comes one policy category and a question about it. Answer with "
            "exactly one word: Yes if the item violates that category, No if it does not.",
        ]
    )


def question(category: Category) -> str:
    """The only text that differs between the requests of one item, so it comes last."""
    lines = ["Policy category:", *category_lines([category], lambda c: f"{c.title}: {c.description}")]
    lines.append("Does the item violate this policy? Answer Yes or No.")
    return "\n".join(lines)


def yes_probability(top_logprobs: Iterable[tuple[str, float]]) -> float | None:
    """P(yes) renormalised over yes and no; None when neither word is among the alternatives."""
    shares = answer_shares(top_logprobs, ("yes", "no"))
    return None if shares is None else shares["yes"]


class YesNoScorer:
    name: ClassVar[str] = "yes_no"

    def requests(self, policy: Policy, item: ItemContent) -> list[ModelRequest]:
        system = {"role": "system", "content": system_prompt(policy)}
        requests = []
        for category in policy.categories:
            messages: list[dict[str, Any]] = [
                system,
                {"role": "user", "content": user_content(item, question(category))},
            ]
            requests.append(logprob_request(messages))
        return requests

    def scores(self, policy: Policy, answers: Sequence[ModelAnswer]) -> dict[str, float]:
        if len(answers) != len(policy.categories):
            raise InferenceProtocolError(
                f"expected {len(policy.categories)} answers, one per category, got {len(answers)}"
            )
        scores: dict[str, float] = {}
        for category, answer in zip(policy.categories, answers, strict=True):
            if not answer.tokens:
                raise InferenceProtocolError(f"no generated token for category {category.id}")
            probability = yes_probability(answer.tokens[0].alternatives)
            if probability is None:
                raise InferenceProtocolError(
                    f"neither Yes nor No is among the model's top log-probabilities for category "
                    f"{category.id}"
                )
            scores[category.id] = probability
        return scores
