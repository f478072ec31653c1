"""From the model's label-token log-probabilities to a score per category.

The model is asked for one capital letter: a category's label, or the policy's safe
label. The probabilities of the label letters found among the first token's
``top_logprobs`` (case and surrounding spaces ignored, variants summed) are renormalised
over the label set, so a category's score is P(category | the model answered with a
label). A label missing from ``top_logprobs`` counts as probability 0. When no label at
all is among them, the model did not follow the answer format and there is nothing to
score: that is an error, never an approval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from streamproc.errors import InferenceProtocolError
from streamproc.policy.model import Policy

__all__ = ["score_labels"]


def score_labels(policy: Policy, top_logprobs: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Score in [0, 1] per category id, in policy order."""
    labels = {c.label for c in policy.categories} | {policy.safe_label}
    mass = dict.fromkeys(labels, 0.0)
    for token, logprob in top_logprobs:
        letter = token.strip().upper()
        if letter in mass and math.isfinite(logprob):
            mass[letter] += math.exp(logprob)
    total = sum(mass.values())
    if total <= 0.0:
        raise InferenceProtocolError(
            f"none of the label tokens {sorted(labels)} is among the model's top log-probabilities"
        )
    return {c.id: min(1.0, mass[c.label] / total) for c in policy.categories}
