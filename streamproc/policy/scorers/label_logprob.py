"""``label_logprob``: one request per item, one label letter per category (instruct models).

The model is asked for one capital letter: a category's label, or the policy's safe
label. The probabilities of the label letters among the first token's ``top_logprobs``
(case and surrounding spaces ignored, variants summed) are renormalised over the label
set, so a category's score is P(category | the model answered with a label). A label
missing from ``top_logprobs`` gets an upper bound, never 0 (see ``answer_shares``). When
no label at all is among them, the model did not follow the answer format: an error,
never an approval.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from streamproc.errors import InferenceProtocolError
from streamproc.inference.protocol import ModelAnswer, ModelRequest
from streamproc.policy.model import Policy
from streamproc.policy.prompt import DATA_NOTICE, ItemContent, category_lines, user_content
from streamproc.policy.scorers.base import answer_shares, logprob_request

__all__ = ["LabelLogprobScorer", "label_scores", "system_prompt"]


def system_prompt(policy: Policy) -> str:
    """The long, request-independent part; identical bytes for every item of a policy."""
    lines = [policy.preamble, "", "Policy categories:"]
    lines += category_lines(policy.categories, lambda c: f"{c.label}. {c.title}: {c.description}")
    lines += [
        f"{policy.safe_label}. None of the above: the item complies with the policy.",
        "",
        DATA_NOTICE,
        "Answer with exactly one capital letter: the category the item violates most "
        f"clearly, or {policy.safe_label} if it violates none.",
    ]
    return "\n".join(lines)


def label_scores(policy: Policy, top_logprobs: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Score in [0, 1] per category id, in policy order."""
    labels = [c.label for c in policy.categories] + [policy.safe_label]
    shares = answer_shares(top_logprobs, labels, fold=str.upper)
    if shares is None:
        raise InferenceProtocolError(
            f"none of the label tokens {sorted(labels)} is among the model's top log-probabilities"
        )
    return {c.id: shares[c.label] for c in policy.categories}


class LabelLogprobScorer:
    name: ClassVar[str] = "label_logprob"

    def requests(self, policy: Policy, item: ItemContent) -> list[ModelRequest]:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": system_prompt(policy)},
            {"role": "user", "content": user_content(item, "Answer:")},
        ]
        return [logprob_request(messages)]

    def scores(self, policy: Policy, answers: Sequence[ModelAnswer]) -> dict[str, float]:
        if len(answers) != 1 or not answers[0].tokens:
            raise InferenceProtocolError("expected one answer with one generated token")
        return label_scores(policy, answers[0].tokens[0].alternatives)
