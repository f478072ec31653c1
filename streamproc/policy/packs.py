"""Policy packs: YAML files that analysts edit, loaded into frozen Policy objects.

A pack applies to one content type and, optionally, to some verticals (the first element
of a listing's category path, e.g. "Health"). Per content type there is exactly one pack
without verticals: the default for everything the others do not claim. Validation errors
name the file and line.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from streamproc.errors import ConfigError
from streamproc.policy.model import (
    DEFAULT_REVIEW_SLA_HOURS,
    Category,
    MediaBudget,
    Policy,
    PolicyMode,
    Rule,
    ScorerName,
    Thresholds,
)
from streamproc.policy.rules import CompiledRules
from streamproc.policy.scorers import SCORERS
from streamproc.schemas import ContentEvent, ContentType, Decision, ListingEvent

__all__ = [
    "CategorySpec",
    "MediaSpec",
    "PackSpec",
    "PolicySet",
    "RuleSpec",
    "ThresholdsSpec",
    "load_pack",
    "load_policy_set",
    "pack_files",
]

Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]*$", max_length=64)]
ReasonCode = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]*$", max_length=64)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
SlaHours = Annotated[float, Field(gt=0, le=24 * 365)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ThresholdsSpec(_Spec):
    reject: Probability
    review: Probability

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdsSpec:
        if self.review > self.reject:
            raise ValueError(f"review ({self.review}) must not exceed reject ({self.reject})")
        return self


class CategorySpec(_Spec):
    id: Identifier
    label: Annotated[str, StringConstraints(pattern=r"^[A-Z]$")] | None = None
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    description: Annotated[str, StringConstraints(min_length=1)]
    examples: list[str] = []
    reason_code: ReasonCode
    seller_message: Annotated[str, StringConstraints(min_length=1)]
    thresholds: ThresholdsSpec
    guard_code: Annotated[str, StringConstraints(pattern=r"^S[0-9]{1,2}$")] | None = None
    review_sla_hours: SlaHours | None = None


class MediaSpec(_Spec):
    max_images: Annotated[int, Field(ge=0, le=16)] = 0
    max_keyframes: Annotated[int, Field(ge=0, le=32)] = 0
    keyframe_sampling: Literal["uniform", "first"] = "uniform"


class RuleSpec(_Spec):
    id: Identifier
    stage: Literal["pre", "post"]
    when: Annotated[str, StringConstraints(min_length=1)]
    decision: Decision
    reason_code: ReasonCode
    seller_message: str = ""
    category: Identifier | None = None


class PackSpec(_Spec):
    """The YAML layout of a pack (see policies/*.yaml)."""

    name: Identifier
    description: str = ""
    content_type: ContentType
    verticals: list[Annotated[str, StringConstraints(min_length=1)]] = []
    mode: PolicyMode = "live"
    shadow_sample: Probability = 1.0
    review_sla_hours: SlaHours = DEFAULT_REVIEW_SLA_HOURS
    scorer: ScorerName = "label_logprob"
    preamble: Annotated[str, StringConstraints(min_length=1)]
    safe_label: Annotated[str, StringConstraints(pattern=r"^[A-Z]$")] = "N"
    media: MediaSpec = MediaSpec()
    categories: Annotated[list[CategorySpec], Field(min_length=1, max_length=25)]
    rules: list[RuleSpec] = []
    lists: dict[Identifier, list[str]] = {}
    median_prices: dict[str, Annotated[float, Field(gt=0)]] = {}

    def to_policy(self) -> Policy:
        free = (c for c in string.ascii_uppercase if c != self.safe_label and c not in self._labels())
        categories = tuple(
            Category(
                id=c.id,
                label=c.label or next(free),
                title=c.title,
                description=c.description.strip(),
                reason_code=c.reason_code,
                seller_message=c.seller_message.strip(),
                thresholds=Thresholds(reject=c.thresholds.reject, review=c.thresholds.review),
                examples=tuple(c.examples),
                guard_code=c.guard_code,
                review_sla_hours=c.review_sla_hours,
            )
            for c in self.categories
        )
        return Policy(
            name=self.name,
            content_type=self.content_type,
            preamble=self.preamble.strip(),
            categories=categories,
            safe_label=self.safe_label,
            scorer=self.scorer,
            media=MediaBudget(**self.media.model_dump()),
            rules=tuple(Rule(**r.model_dump()) for r in self.rules),
            lists=tuple((k, tuple(v)) for k, v in sorted(self.lists.items())),
            median_prices=tuple(sorted(self.median_prices.items())),
            verticals=tuple(self.verticals),
            review_sla_hours=self.review_sla_hours,
            mode=self.mode,
            shadow_sample=self.shadow_sample,
        )

    def _labels(self) -> set[str]:
        return {c.label for c in self.categories if c.label}

    @model_validator(mode="after")
    def _sample_only_for_shadows(self) -> PackSpec:
        if self.mode == "live" and self.shadow_sample != 1.0:
            raise ValueError(
                "shadow_sample applies to mode: shadow packs only; remove it or set mode: shadow"
            )
        return self


def _line_of(root: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """1-based line of the deepest YAML node on a pydantic error path."""
    node, line = root, None
    for key in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


def load_pack(path: Path) -> Policy:
    """Read, validate and freeze one pack; errors say ``FILE:LINE: field: problem``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read policy pack: {exc.strerror}") from exc
    try:
        data: Any = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    try:
        spec = PackSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            field = ".".join(str(p) for p in err["loc"]) or "(pack)"
            line = _line_of(root, err["loc"])
            problems.append(f"{path}:{line or 1}: {field}: {err['msg']}")
        raise ConfigError("\n".join(problems)) from exc
    try:
        policy = spec.to_policy()
        CompiledRules.compile(policy)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if policy.scorer not in SCORERS:
        raise ConfigError(f"{path}: scorer {policy.scorer!r} is not available; choose from {sorted(SCORERS)}")
    return policy


def pack_files(paths: Iterable[Path]) -> list[Path]:
    """The YAML files named, or found directly in the folders named."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"})
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"policy path {path} does not exist; set STREAMPROC_POLICY__PATHS")
    return files


class PolicySet:
    """The packs in force, with their compiled rules.

    Live packs: one default per content type, plus packs for some verticals; ``select``
    picks the one that decides an item. Shadow packs (candidates) follow the same
    selection and never decide: ``shadows`` lists those an item is also run through.
    """

    def __init__(self, policies: Sequence[Policy]) -> None:
        every = tuple(policies)
        #: The live packs (what ``select`` chooses from).
        self.policies = tuple(p for p in every if p.mode == "live")
        #: The candidate packs, run beside the live ones.
        self.shadow_policies = tuple(p for p in every if p.mode == "shadow")
        for content_type in ("listing", "video"):
            defaults = [p.name for p in self.policies if p.content_type == content_type and not p.verticals]
            shadows = [p.name for p in self.shadow_policies if p.content_type == content_type]
            if shadows and not any(p.content_type == content_type for p in self.policies):
                raise ConfigError(
                    f"shadow packs {shadows} are the only {content_type} packs; a shadow runs beside a "
                    f"live pack: also load the live packs (e.g. policies/ next to policies/candidates/)"
                )
            if len(defaults) != 1:
                raise ConfigError(
                    f"need exactly one {content_type} pack without verticals (the default, mode live), "
                    f"found {defaults or 'none'}"
                )
        names = [p.name for p in every]
        if len(set(names)) != len(names):
            raise ConfigError(f"pack names must be unique, got {names}")
        self._rules = {p.name: CompiledRules.compile(p) for p in every}

    def select(self, event: ContentEvent) -> Policy:
        """The live pack for this event: its vertical's, else its content type's default."""
        content_type, vertical = _selector(event)
        default: Policy | None = None
        for policy in self.policies:
            if policy.content_type != content_type:
                continue
            if vertical is not None and vertical in {v.casefold() for v in policy.verticals}:
                return policy
            if not policy.verticals:
                default = policy
        assert default is not None  # noqa: S101 - checked in __init__
        return default

    def shadows(self, event: ContentEvent, live: Policy | None = None) -> tuple[Policy, ...]:
        """The shadow packs for this event, before sampling: those for its vertical, and the
        default candidates (no verticals) when the live default decides it. ``live``: what
        ``select`` chose for it, if the caller has it already."""
        if not self.shadow_policies:
            return ()
        content_type, vertical = _selector(event)
        live_default = not (live or self.select(event)).verticals
        return tuple(
            p
            for p in self.shadow_policies
            if p.content_type == content_type
            and (vertical in {v.casefold() for v in p.verticals} if p.verticals else live_default)
        )

    def rules(self, policy: Policy) -> CompiledRules:
        return self._rules[policy.name]

    @property
    def versions(self) -> dict[str, str]:
        """Live packs: name → version."""
        return {p.name: p.version for p in self.policies}

    @property
    def shadow_versions(self) -> dict[str, str]:
        """Shadow packs: name → version."""
        return {p.name: p.version for p in self.shadow_policies}

    @property
    def category_ids(self) -> tuple[str, ...]:
        return tuple(sorted({c for p in self.policies for c in p.category_ids}))


def _selector(event: ContentEvent) -> tuple[ContentType, str | None]:
    """(content type, case-folded vertical) that pack selection goes by."""
    if isinstance(event, ListingEvent):
        return "listing", event.category_path[0].casefold() if event.category_path else None
    return "video", None


def load_policy_set(paths: Iterable[Path]) -> PolicySet:
    files = pack_files(paths)
    if not files:
        raise ConfigError("no policy packs (*.yaml) found; set STREAMPROC_POLICY__PATHS to files or folders")
    return PolicySet(tuple(load_pack(f) for f in files))
