"""Audit sampling and shadow sampling: pure, deterministic draws (no I/O, no random state).

A verdict's audit probability is a function of the verdict, its policy and the settings
only, and the draw hashes a stable key: a redelivered item is drawn (or not) exactly as
before, and each sample's weight (1 / probability) stays correct.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from streamproc.config import AuditSettings
from streamproc.policy import Policy, PolicySet
from streamproc.schemas import AuditSample, ContentEvent, Verdict

__all__ = [
    "AuditDraw",
    "audit_probability",
    "audit_sample",
    "drawn",
    "near_threshold",
    "sampled_shadows",
    "score_band",
    "shadow_key",
    "unit_hash",
]


@dataclass(frozen=True)
class AuditDraw:
    """A verdict's chance of being audited and the stratum it belongs to."""

    probability: float
    stratum: str


def unit_hash(key: str) -> float:
    """A uniform number in [0, 1) fixed by ``key`` (the first 64 bits of its SHA-256)."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def drawn(key: str, probability: float) -> bool:
    """Whether the item with this key is in a sample of this probability; stable per key."""
    return unit_hash(key) < probability


def score_band(scores: dict[str, float]) -> str:
    """The tenth the highest score falls in, e.g. ``0.8-0.9``; ``unscored`` without scores."""
    if not scores:
        return "unscored"
    tenth = min(int(max(scores.values()) * 10), 9)  # 1.0 belongs to the top band
    return f"{tenth / 10:.1f}-{(tenth + 1) / 10:.1f}"


def _deciding_category(verdict: Verdict) -> str:
    if verdict.decided_by.kind == "category" and verdict.decided_by.id:
        return verdict.decided_by.id
    return verdict.flagged_categories[0] if verdict.flagged_categories else "none"


def _near_threshold(verdict: Verdict, policy: Policy, band: float) -> bool:
    for category in policy.categories:
        score = verdict.scores.get(category.id)
        if score is None:
            continue
        thresholds = category.thresholds
        if abs(score - thresholds.review) <= band or abs(score - thresholds.reject) <= band:
            return True
    return False


def near_threshold(policy: Policy, settings: AuditSettings) -> tuple[float, float]:
    """(band, boost) of near-threshold sampling: the pack's ``audit`` block, else the deployment's."""
    focus = policy.audit
    band = settings.near_threshold_band if focus.near_threshold_band is None else focus.near_threshold_band
    boost = (
        settings.near_threshold_boost if focus.near_threshold_boost is None else focus.near_threshold_boost
    )
    return band, boost


def audit_probability(verdict: Verdict, policy: Policy, settings: AuditSettings) -> AuditDraw:
    """The chance this verdict is audited, and its stratum (``decision/category/band``).

    The chance is the highest rate that applies — the base rate, the rate of the decision,
    and the rate of each flagged (or the deciding) category — multiplied by the boost when
    any category's score lies within the band of its review or reject threshold (both the
    pack's ``audit`` block or else the settings'), capped at 1.
    """
    category = _deciding_category(verdict)
    rates = [settings.base_rate, settings.decision_rates.get(verdict.decision, 0.0)]
    categories = {*verdict.flagged_categories} | ({category} if category != "none" else set())
    rates += [settings.category_rates.get(c, settings.category_default_rate) for c in sorted(categories)]
    probability = max(rates)
    band, boost = near_threshold(policy, settings)
    if _near_threshold(verdict, policy, band):
        probability *= boost
    return AuditDraw(
        probability=min(1.0, probability),
        stratum=f"{verdict.decision}/{category}/{score_band(verdict.scores)}",
    )


def _probability_bound(verdict: Verdict, policy: Policy, settings: AuditSettings) -> float:
    """At least :func:`audit_probability`'s, without its look at every category's scores."""
    rates = [settings.base_rate, settings.decision_rates.get(verdict.decision, 0.0)]
    if verdict.flagged_categories or _deciding_category(verdict) != "none":
        rates += [settings.category_default_rate, *settings.category_rates.values()]
    return min(1.0, max(rates) * near_threshold(policy, settings)[1])


def audit_sample(verdict: Verdict, policy: Policy, settings: AuditSettings) -> AuditSample | None:
    """The audit record for a live verdict if its draw selects it, else None.

    The draw hashes the verdict's idempotency key, so a redelivered item gets the same answer.
    """
    if not settings.enabled or verdict.mode != "live":
        return None
    position = unit_hash(verdict.idempotency_key)
    if position >= _probability_bound(
        verdict, policy, settings
    ):  # most verdicts: not drawn whatever the scores
        return None
    draw = audit_probability(verdict, policy, settings)
    if draw.probability <= 0.0 or not position < draw.probability:  # as ``drawn``
        return None
    return AuditSample(
        verdict=verdict, stratum=draw.stratum, probability=draw.probability, weight=1.0 / draw.probability
    )


def shadow_key(content_id: str, revision: int, policy_version: str) -> str:
    """The key a shadow pack's sample is drawn by: one item revision, one candidate version."""
    return f"{content_id}:{revision}:{policy_version}"


def sampled_shadows(policies: PolicySet, event: ContentEvent, live: Policy) -> tuple[Policy, ...]:
    """The shadow packs this item runs through: a stable draw per item revision and version."""
    return tuple(
        p
        for p in policies.shadows(event, live)
        if drawn(shadow_key(event.content_id, event.revision, p.version), p.shadow_sample)
    )
