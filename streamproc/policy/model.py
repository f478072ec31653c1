"""What a moderation policy is: frozen data, versioned by content hash.

These dataclasses are also the policy-pack file format: their annotations carry the
constraints that pydantic checks when a pack is loaded (see streamproc.policy.packs).
Built in code they are not validated by pydantic; ``__post_init__`` checks what must hold
however they are built, raising :class:`InvalidPolicy`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints, with_config

from streamproc.errors import ConfigError
from streamproc.policy.cascade import Cascade
from streamproc.policy.heads import ProbeHeads
from streamproc.policy.messages import DEFAULT_MESSAGE_LOCALE, LocaleKey, LocalizedText, Translations
from streamproc.policy.pack_fields import (
    PACK_FILE,
    Calibration,
    CalibrationMethod,
    CalibrationProvenance,
    ContextualCalibration,
    Identifier,
    InvalidPolicy,
    IsotonicCalibration,
    PlattCalibration,
    Probability,
    ScorerName,
    SortedItems,
)
from streamproc.schemas import ContentType, Decision

__all__ = [
    "DEFAULT_REVIEW_SLA_HOURS",
    "AuditFocus",
    "Calibration",
    "CalibrationMethod",
    "CalibrationProvenance",
    "Category",
    "ContextualCalibration",
    "HeadsRef",
    "InvalidPolicy",
    "IsotonicCalibration",
    "MediaBudget",
    "PlattCalibration",
    "Policy",
    "PolicyMode",
    "Rule",
    "ScorerName",
    "Thresholds",
]

#: live: the pack decides and its verdicts are enforced; shadow: a candidate run beside them.
PolicyMode = Literal["live", "shadow"]
DEFAULT_REVIEW_SLA_HOURS = 24.0
_DEFAULT_TEXT_WINDOWS = 4
#: Deployment choices and documentation, not decision logic: left out of the version, so a
#: candidate keeps its version when its sample changes or it is promoted. The calibration's
#: provenance says where thresholds came from; the thresholds themselves are versioned.
#: ``probe`` is what ``heads`` names, loaded: the version holds its checksum instead. ``audit``
#: chooses which verdicts reviewers check, not the verdicts.
_UNVERSIONED = ("mode", "shadow_sample", "description", "calibration_provenance", "probe", "audit")

ReasonCode = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]*$", max_length=64)]
Letter = Annotated[str, StringConstraints(pattern=r"^[A-Z]$")]
SlaHours = Annotated[float, Field(gt=0, le=24 * 365)]
#: Text the model or a seller reads, without the trailing newline of a YAML block.
Text = Annotated[str, StringConstraints(min_length=1), AfterValidator(str.strip)]


@with_config(PACK_FILE)
@dataclass(frozen=True)
class Thresholds:
    """Score ≥ reject → reject; score ≥ review → review; otherwise approve."""

    reject: Probability
    review: Probability

    def __post_init__(self) -> None:
        if not 0.0 <= self.review <= self.reject <= 1.0:
            raise InvalidPolicy(
                f"review ({self.review}) must not exceed reject ({self.reject}): thresholds need "
                "0 <= review <= reject <= 1"
            )


@with_config(PACK_FILE)
@dataclass(frozen=True)
class HeadsRef:
    """``embedding_probe`` scorer: the heads file (relative to the pack) and its SHA-256."""

    file: Annotated[str, StringConstraints(min_length=1)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


@with_config(PACK_FILE)
@dataclass(frozen=True)
class Category:
    """One kind of violation, written as policy text the model reads."""

    id: Identifier
    #: The single letter the model answers with; a pack file may leave it to the loader.
    label: Letter
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    description: Text
    reason_code: ReasonCode
    seller_message: Text
    thresholds: Thresholds
    examples: tuple[str, ...] = ()
    #: Code of this category in a guard model's taxonomy, e.g. "S8" (llama_guard scorer).
    guard_code: Annotated[str, StringConstraints(pattern=r"^S[0-9]{1,2}$")] | None = None
    #: Hours a human reviewer has for an item flagged for this category; None = the pack's.
    review_sla_hours: SlaHours | None = None
    #: Maps the scorer's score before the thresholds; None = the score as the scorer gives it.
    calibration: Calibration | None = None
    #: ``channel`` scorer: a line saying how an item of this category reads (the model is
    #: asked how much likelier the item's text becomes after it); None = title and description.
    channel_prompt: Text | None = None
    #: ``seller_message`` in other locales, e.g. {de: ..., pt-BR: ...} (streamproc.policy.messages).
    seller_messages: Translations = ()


@with_config(PACK_FILE)
@dataclass(frozen=True)
class MediaBudget:
    """How many images go to the model; 0 means a text-only request. The model server fetches
    them, so only URLs on ``allowed_hosts`` (exact host names, e.g. the CDN's) are sent."""

    max_images: Annotated[int, Field(ge=0, le=16)] = 0
    max_keyframes: Annotated[int, Field(ge=0, le=32)] = 0
    keyframe_sampling: Literal["uniform", "first"] = "uniform"
    allowed_hosts: tuple[Annotated[str, StringConstraints(min_length=1, max_length=253)], ...] = ()

    def __post_init__(self) -> None:
        if (self.max_images or self.max_keyframes) and not self.allowed_hosts:
            raise InvalidPolicy(
                "media.allowed_hosts must name the hosts item images are served from when "
                "max_images or max_keyframes is above 0 (the model server fetches every URL it is given)"
            )
        object.__setattr__(self, "allowed_hosts", tuple(h.lower() for h in self.allowed_hosts))


@with_config(PACK_FILE)
@dataclass(frozen=True)
class AuditFocus:
    """Where this pack spends reviewers' audit time: a verdict with a score within
    ``near_threshold_band`` of a category's review or reject threshold is
    ``near_threshold_boost`` times likelier to be audited (its weight shrinks alike, so quality
    figures stay unbiased). Unset: the deployment's ``AUDIT__NEAR_THRESHOLD_*``."""

    near_threshold_band: Probability | None = None
    near_threshold_boost: Annotated[float, Field(ge=1.0, le=1000.0)] | None = None


@with_config(PACK_FILE)
@dataclass(frozen=True)
class Rule:
    """A rule-engine expression that decides an item before the model (``pre``) or
    overrides the model's decision after it (``post``)."""

    id: Identifier
    stage: Literal["pre", "post"]
    when: Annotated[str, StringConstraints(min_length=1)]
    decision: Decision
    reason_code: ReasonCode
    seller_message: str = ""
    category: Identifier | None = None
    #: ``seller_message`` in other locales; a rule without a message of its own has its category's.
    seller_messages: Translations = ()


def _drop_unset_translations(fields: dict[str, Any]) -> None:
    """``Policy.version``: a pack without translations keeps the version it had before them."""
    if fields["message_locale"] == DEFAULT_MESSAGE_LOCALE:
        del fields["message_locale"]
    for holder in (*fields["categories"], *fields["rules"]):
        if not holder["seller_messages"]:
            del holder["seller_messages"]


@with_config(PACK_FILE)
@dataclass(frozen=True)
class Policy:
    """A named set of categories for one content type, with the instructions around them."""

    name: Identifier
    content_type: ContentType
    preamble: Text
    categories: Annotated[tuple[Category, ...], Field(min_length=1, max_length=25)]
    safe_label: Letter = "N"
    scorer: ScorerName = "label_logprob"
    media: MediaBudget = MediaBudget()
    #: Requests per item at most: the first reads every field's head, each further one the
    #: next part of a long field; text past the last is named on the verdict (``clipped_fields``).
    max_text_windows: Annotated[int, Field(ge=1, le=16)] = _DEFAULT_TEXT_WINDOWS
    rules: tuple[Rule, ...] = ()
    #: The locale the plain ``seller_message`` texts are written in.
    message_locale: LocaleKey = DEFAULT_MESSAGE_LOCALE
    #: Named lists rules can refer to, e.g. banned_sellers, blocked_terms.
    lists: Annotated[
        tuple[tuple[str, tuple[str, ...]], ...], SortedItems(dict[Identifier, tuple[str, ...]])
    ] = ()
    #: Median price per category path ("Fashion > Watches"), for price-anomaly rules.
    median_prices: Annotated[
        tuple[tuple[str, float], ...], SortedItems(dict[str, Annotated[float, Field(gt=0)]])
    ] = ()
    #: First elements of listing category paths this policy is for; () = the default.
    verticals: tuple[Annotated[str, StringConstraints(min_length=1)], ...] = ()
    #: Review deadline for items no category SLA covers (e.g. inference errors).
    review_sla_hours: SlaHours = DEFAULT_REVIEW_SLA_HOURS
    mode: PolicyMode = "live"
    #: Share of matching traffic a shadow pack runs on.
    shadow_sample: Probability = 1.0
    #: For the people editing the pack; the model never reads it.
    description: str = ""
    #: ``channel`` scorer: the text every category's ``channel_prompt`` is compared with (how
    #: an ordinary item reads); None = a one-line default.
    channel_neutral: Text | None = None
    #: Written by ``streamproc calibrate``: the data, model and targets the thresholds fit.
    calibration_provenance: CalibrationProvenance | None = None
    #: Items whose calibrated scores are uncertain go to the deployment's second model.
    cascade: Cascade | None = None
    #: Audit sampling near this pack's thresholds (the rest of audit sampling is the deployment's).
    audit: AuditFocus = AuditFocus()
    #: ``embedding_probe`` scorer: the trained heads it applies (``streamproc train``).
    heads: HeadsRef | None = None
    #: The heads themselves, loaded by ``load_pack`` from ``heads`` (never written in a pack).
    probe: ProbeHeads | None = None

    def __post_init__(self) -> None:
        labels = [c.label for c in self.categories] + [self.safe_label]
        if len(set(labels)) != len(labels) or not all(len(x) == 1 and x.isupper() for x in labels):
            raise InvalidPolicy(f"policy {self.name}: labels must be distinct capital letters")
        ids = [c.id for c in self.categories]
        if len(set(ids)) != len(ids):
            raise InvalidPolicy(f"policy {self.name}: category ids must be distinct")
        codes = [c.guard_code for c in self.categories if c.guard_code]
        if len(set(codes)) != len(codes):
            raise InvalidPolicy(f"policy {self.name}: guard_code values must be distinct, got {codes}")
        slas = [self.review_sla_hours] + [
            c.review_sla_hours for c in self.categories if c.review_sla_hours is not None
        ]
        if not all(0 < h <= 24 * 365 for h in slas):
            raise InvalidPolicy(f"policy {self.name}: review_sla_hours must be in (0, 8760], got {slas}")
        if not 0.0 <= self.shadow_sample <= 1.0:
            raise InvalidPolicy(
                f"policy {self.name}: shadow_sample must be in [0, 1], got {self.shadow_sample}"
            )
        fitted = self.calibration_provenance.categories if self.calibration_provenance else ()
        if set(fitted) - set(self.category_ids):
            raise InvalidPolicy(
                f"calibration_provenance.categories names {sorted(set(fitted) - set(self.category_ids))}, "
                f"which are not categories of policy {self.name}"
            )
        if (self.scorer == "embedding_probe") != (self.heads is not None):
            raise InvalidPolicy(
                f"policy {self.name}: the embedding_probe scorer needs heads (file and sha256, written by "
                "`streamproc train`), and heads apply to it only"
            )
        self._check_cascade()
        self._check_messages()
        if self.mode == "live" and self.shadow_sample != 1.0:
            raise InvalidPolicy(
                "shadow_sample applies to mode: shadow packs only; remove it or set mode: shadow"
            )

    def _check_cascade(self) -> None:
        if self.cascade is None:
            return
        if self.scorer == "embedding_probe" and self.cascade.scorer is None:
            raise InvalidPolicy(
                f"policy {self.name}: an embedding_probe pack's cascade needs a prompt scorer for the "
                "second model, e.g. cascade: {scorer: channel, band: ...}"
            )
        unknown = {c for c, _ in self.cascade.calibration} - set(self.category_ids)
        if unknown:
            raise InvalidPolicy(
                f"cascade.calibration names {sorted(unknown)}, which are not categories of policy {self.name}"
            )

    def _check_messages(self) -> None:
        for rule in self.rules:
            if rule.seller_messages and not rule.seller_message:
                raise InvalidPolicy(
                    f"rule {rule.id}: seller_messages translate its seller_message, which it does not have; "
                    "add the default text"
                )
        for what, text in self.localized_messages().items():
            if any(locale == self.message_locale for locale, _ in text.translations):
                raise InvalidPolicy(
                    f"{what}: seller_messages.{self.message_locale} repeats the pack's message_locale; "
                    "the plain seller_message is the text in that locale"
                )

    def localized_messages(self) -> dict[str, LocalizedText]:
        """Each seller message the pack defines, by what carries it (``category spam``, ``rule
        clipped-content``); rules without a message of their own show their category's."""
        messages = {
            f"category {c.id}": LocalizedText(c.seller_message, self.message_locale, c.seller_messages)
            for c in self.categories
        }
        for rule in self.rules:
            if rule.seller_message:
                messages[f"rule {rule.id}"] = LocalizedText(
                    rule.seller_message, self.message_locale, rule.seller_messages
                )
        return messages

    @cached_property
    def version(self) -> str:
        """``name@hash``: any change to text, labels or thresholds gives a new version."""
        fields = dataclasses.asdict(self)
        for name in _UNVERSIONED:
            del fields[name]
        # Optional fields a pack leaves unset are left out, so packs written before those
        # fields existed keep their versions.
        for name in ("channel_neutral", "cascade", "heads"):
            if fields[name] is None:
                del fields[name]
        _drop_unset_translations(fields)
        if fields["max_text_windows"] == _DEFAULT_TEXT_WINDOWS:
            del fields["max_text_windows"]
        if not fields["media"]["allowed_hosts"]:
            del fields["media"]["allowed_hosts"]
        if "cascade" in fields:  # as above, and its provenance is documentation
            cascade = fields["cascade"]
            del cascade["calibration_provenance"]
            for name in ("scorer", "calibration"):
                if not cascade[name]:
                    del cascade[name]
        for category in fields["categories"]:
            for name in ("calibration", "channel_prompt"):
                if category[name] is None:
                    del category[name]
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
        return self._with_category_field("thresholds", overrides)

    def with_calibration(self, calibrations: Mapping[str, Calibration | None]) -> Policy:
        """A copy with some categories' calibration set (None: removed); the version changes."""
        return self._with_category_field("calibration", calibrations)

    def _with_category_field(self, field: str, values: Mapping[str, Any]) -> Policy:
        unknown = set(values) - set(self.category_ids)
        if unknown:
            raise ConfigError(
                f"policy {self.name} has no categories {sorted(unknown)}; known: {list(self.category_ids)}"
            )
        categories = tuple(
            dataclasses.replace(c, **{field: values[c.id]}) if c.id in values else c for c in self.categories
        )
        return dataclasses.replace(self, categories=categories)
