"""``embedding_probe``: trained linear heads over the backbone's pooled hidden state.

A small model asked for a label barely beats reviewing everything, but its hidden states
carry the signal: the embedding server (vLLM in pooling mode serving the first layers of
the model, mean-pooled) returns one vector per item, and the pack's heads
(``streamproc.policy.heads``, trained on the platform's labels by ``streamproc train``)
turn it into a score per category in the worker. Cost: one short prefill per item, no
generated token and no vocabulary-wide log-probabilities.

Text only, like ``channel``: the item's rendered text, without the pack's preamble, so
the mean over its tokens is the item's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from streamproc.errors import InferenceProtocolError
from streamproc.inference.protocol import ModelAnswer, ModelRequest
from streamproc.policy.model import Policy
from streamproc.policy.prompt import ItemContent

__all__ = ["EmbeddingProbeScorer"]


class EmbeddingProbeScorer:
    name: ClassVar[str] = "embedding_probe"

    def requests(self, policy: Policy, item: ItemContent) -> list[ModelRequest]:
        return [ModelRequest("embeddings", {"input": [item.text]})]

    def scores(self, policy: Policy, answers: Sequence[ModelAnswer]) -> dict[str, float]:
        if policy.probe is None:  # load_pack always loads them; a policy built in code may not
            raise InferenceProtocolError(f"policy {policy.name} has the embedding_probe scorer but no heads")
        if len(answers) != 1 or len(answers[0].embeddings) != 1:
            raise InferenceProtocolError(
                f"expected one answer with one embedding, got {[len(a.embeddings) for a in answers]}"
            )
        return policy.probe.scores(answers[0].embeddings[0], policy.category_ids)
