"""``json``: one request per item for a JSON object of scores: the slow, readable baseline.

The model writes a probability per category id, constrained by structured output (a JSON
schema with one required number in [0, 1] per category id, nothing else). It costs many
generated tokens instead of one, and the numbers are the model's stated confidence rather
than its token probabilities, but any instruct model can do it and the answer is easy to
read. It is a baseline to compare the log-probability scorers with.

Scoring reads the answer text as JSON. A value outside [0, 1] is clamped into it (should
the server not enforce the schema). Invalid JSON, something other than an object, or a
missing, non-numeric or non-finite value for any category is a format error, never an
approval; extra keys are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import orjson

from streamproc.errors import InferenceProtocolError
from streamproc.inference.protocol import ModelAnswer, ModelRequest
from streamproc.policy.model import Policy
from streamproc.policy.prompt import DATA_NOTICE, ItemContent, category_lines, user_content

__all__ = ["JsonScorer", "response_schema", "system_prompt"]


def system_prompt(policy: Policy) -> str:
    """The long, request-independent part; identical bytes for every item of a policy."""
    lines = [policy.preamble, "", "Policy categories (id: title. description):"]
    lines += category_lines(policy.categories, lambda c: f"- {c.id}: {c.title}. {c.description}")
    lines += [
        "",
        DATA_NOTICE,
        "Answer with a JSON object that has one key per category id; its value is the "
        "probability, from 0 to 1 with at most two decimals, that the item violates that category.",
    ]
    return "\n".join(lines)


def response_schema(policy: Policy) -> dict[str, Any]:
    """A JSON schema for the answer: every category id, each a number in [0, 1], nothing else."""
    return {
        "type": "object",
        "properties": {cid: {"type": "number", "minimum": 0, "maximum": 1} for cid in policy.category_ids},
        "required": list(policy.category_ids),
        "additionalProperties": False,
    }


def _probability(value: object, category_id: str) -> float:
    # bool is an int subclass: true/false is not a probability.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InferenceProtocolError(f"score for category {category_id} is not a finite number: {value!r}")
    return min(1.0, max(0.0, float(value)))


class JsonScorer:
    name: ClassVar[str] = "json"

    def requests(self, policy: Policy, item: ItemContent) -> list[ModelRequest]:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": system_prompt(policy)},
            {"role": "user", "content": user_content(item, "Scores as JSON:")},
        ]
        body = {
            "messages": messages,
            # Braces plus, per category, its quoted id and a short number.
            "max_tokens": 40 + 12 * len(policy.categories),
            "temperature": 0.0,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "moderation_scores",
                    "schema": response_schema(policy),
                    "strict": True,
                },
            },
        }
        return [ModelRequest("chat/completions", body)]

    def scores(self, policy: Policy, answers: Sequence[ModelAnswer]) -> dict[str, float]:
        if len(answers) != 1:
            raise InferenceProtocolError(f"expected one answer, got {len(answers)}")
        try:
            parsed = orjson.loads(answers[0].text)
        except orjson.JSONDecodeError as exc:
            raise InferenceProtocolError(f"the answer is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise InferenceProtocolError(f"the answer is not a JSON object: {answers[0].text[:200]!r}")
        missing = [cid for cid in policy.category_ids if cid not in parsed]
        if missing:
            raise InferenceProtocolError(f"the answer has no score for categories {missing}")
        return {cid: _probability(parsed[cid], cid) for cid in policy.category_ids}
