"""What a moderation policy is: frozen data, versioned by content hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from streamproc.errors import ConfigError
from streamproc.schemas import ContentType, Decision

__all__ = [
    "DEFAULT_REVIEW_SLA_HOURS",
    "Category",
    "MediaBudget",
    "Policy",
    "PolicyMode",
    "Rule",
    "ScorerName",
    "Thresholds",
]

ScorerName = Literal["label_logprob", "yes_no", "llama_guard", "json"]
#: live: the pack decides and its verdicts are enforced; shadow: a candidate run beside them.
PolicyMode = Literal["live", "shadow"]
DEFAULT_REVIEW_SLA_HOURS = 24.0
#: Deployment choices, not decision logic: left out of the version, so a candidate keeps its
#: version when its sample changes or it is promoted.
_UNVERSIONED = ("mode", "shadow_sample")


@dataclass(frozen=True)
class Thresholds:
    """Score ≥ reject → reject; score ≥ review → review; otherwise approve."""

    reject: float
    review: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.review <= self.reject <= 1.0:
            raise ConfigError(
                f"thresholds need 0 <= review <= reject <= 1, got review={self.review} reject={self.reject}"
            )


@dataclass(frozen=True)
class Category:
    """One kind of violation, written as policy text the model reads."""

    id: str
    label: str  # the single letter the model answers with
    title: str
    description: str
    reason_code: str
    seller_message: str
    thresholds: Thresholds
    examples: tuple[str, ...] = ()
    #: Code of this category in a guard model's taxonomy, e.g. "S8" (llama_guard scorer).
    guard_code: str | None = None
    #: Hours a human reviewer has for an item flagged for this category; None = the pack's.
    review_sla_hours: float | None = None


@dataclass(frozen=True)
class MediaBudget:
    """How many images go to the model; 0 means a text-only request."""

    max_images: int = 0
    max_keyframes: int = 0
    keyframe_sampling: Literal["uniform", "first"] = "uniform"


@dataclass(frozen=True)
class Rule:
    """A rule-engine expression that decides an item before the model (``pre``) or
    overrides the model's decision after it (``post``)."""

    id: str
    stage: Literal["pre", "post"]
    when: str
    decision: Decision
    reason_code: str
    seller_message: str = ""
    category: str | None = None


@dataclass(frozen=True)
class Policy:
    """A named set of categories for one content type, with the instructions around them."""

    name: str
    content_type: ContentType
    preamble: str
    categories: tuple[Category, ...]
    safe_label: str = "N"
    scorer: ScorerName = "label_logprob"
    media: MediaBudget = MediaBudget()
    rules: tuple[Rule, ...] = ()
    #: Named lists rules can refer to, e.g. banned_sellers, blocked_terms.
    lists: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Median price per category path ("Fashion > Watches"), for price-anomaly rules.
    median_prices: tuple[tuple[str, float], ...] = ()
    #: First elements of listing category paths this policy is for; () = the default.
    verticals: tuple[str, ...] = ()
    #: Review deadline for items no category SLA covers (e.g. inference errors).
    review_sla_hours: float = DEFAULT_REVIEW_SLA_HOURS
    mode: PolicyMode = "live"
    #: Share of matching traffic a shadow pack runs on.
    shadow_sample: float = 1.0

    def __post_init__(self) -> None:
        labels = [c.label for c in self.categories] + [self.safe_label]
        if len(set(labels)) != len(labels) or not all(len(x) == 1 and x.isupper() for x in labels):
            raise ConfigError(f"policy {self.name}: labels must be distinct capital letters")
        ids = [c.id for c in self.categories]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"policy {self.name}: category ids must be distinct")
        codes = [c.guard_code for c in self.categories if c.guard_code]
        if len(set(codes)) != len(codes):
            raise ConfigError(f"policy {self.name}: guard_code values must be distinct, got {codes}")
        slas = [self.review_sla_hours] + [
            c.review_sla_hours for c in self.categories if c.review_sla_hours is not None
        ]
        if not all(0 < h <= 24 * 365 for h in slas):
            raise ConfigError(f"policy {self.name}: review_sla_hours must be in (0, 8760], got {slas}")
        if not 0.0 <= self.shadow_sample <= 1.0:
            raise ConfigError(
                f"policy {self.name}: shadow_sample must be in [0, 1], got {self.shadow_sample}"
            )

    @cached_property
    def version(self) -> str:
        """``name@hash``: any change to text, labels or thresholds gives a new version."""
        fields = dataclasses.asdict(self)
        for name in _UNVERSIONED:
            del fields[name]
        canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False)
        return f"{self.name}@{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"

    @property
    def category_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.categories)

    def review_sla(self, category_ids: Iterable[str]) -> float:
        """Hours to review an item flagged for these categories: the shortest of their SLAs,
        or the pack's when none of them has one (or none is flagged)."""
        flagged = set(category_ids)
        hours = [
            c.review_sla_hours for c in self.categories if c.id in flagged and c.review_sla_hours is not None
        ]
        return min(hours, default=self.review_sla_hours)

    def with_thresholds(self, overrides: Mapping[str, Thresholds]) -> Policy:
        """A copy with some categories' thresholds replaced (the version changes with them)."""
        unknown = set(overrides) - set(self.category_ids)
        if unknown:
            raise ConfigError(
                f"policy {self.name} has no categories {sorted(unknown)}; known: {list(self.category_ids)}"
            )
        categories = tuple(
            dataclasses.replace(c, thresholds=overrides.get(c.id, c.thresholds)) for c in self.categories
        )
        return dataclasses.replace(self, categories=categories)
