"""Scorer strategies, chosen by name in a policy pack (``scorer:``)."""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType
from typing import Final

from streamproc.policy.model import Policy
from streamproc.policy.scorers.base import Scorer, logprob_request
from streamproc.policy.scorers.channel import ChannelScorer
from streamproc.policy.scorers.embedding_probe import EmbeddingProbeScorer
from streamproc.policy.scorers.json_scores import JsonScorer
from streamproc.policy.scorers.label_logprob import LabelLogprobScorer, label_scores, system_prompt
from streamproc.policy.scorers.llama_guard import LlamaGuardScorer
from streamproc.policy.scorers.yes_no import YesNoScorer

__all__ = [
    "SCORERS",
    "ChannelScorer",
    "EmbeddingProbeScorer",
    "JsonScorer",
    "LabelLogprobScorer",
    "LlamaGuardScorer",
    "Scorer",
    "YesNoScorer",
    "label_scores",
    "logprob_request",
    "model_roles",
    "system_prompt",
    "uses_embeddings",
]

SCORERS: Final[MappingProxyType[str, Scorer]] = MappingProxyType(
    {
        scorer.name: scorer
        for scorer in (
            EmbeddingProbeScorer(),
            ChannelScorer(),
            LabelLogprobScorer(),
            YesNoScorer(),
            LlamaGuardScorer(),
            JsonScorer(),
        )
    }
)


def uses_embeddings(policy: Policy) -> bool:
    """Whether the pack's scorer asks the embedding server (the others ask the generative one)."""
    return policy.scorer == EmbeddingProbeScorer.name


def model_roles(policies: Iterable[Policy]) -> tuple[bool, bool]:
    """(generative, embedding): which model servers these packs ask."""
    asks = [uses_embeddings(p) for p in policies]
    return not all(asks), any(asks)
