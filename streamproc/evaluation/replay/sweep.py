"""A threshold sweep over a replay's stored scores: no model call.

The deciding scores a replay stored are what thresholds and post-rules read, so deciding from
them at other thresholds (``decide_scored``) gives what a replay at those thresholds gives.
Items a pre-rule or an error decided do not depend on thresholds and keep their results.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import orjson

from streamproc.decision import decide_scored, flagged_categories
from streamproc.errors import ConfigError
from streamproc.evaluation.replay.records import ReplayedItem
from streamproc.policy import Policy, Thresholds
from streamproc.policy.rules import CompiledRules
from streamproc.schemas import decode_event

__all__ = ["MAX_SETS", "SweepAxis", "ThresholdSet", "parse_axis", "rescore", "threshold_sets"]

#: Threshold sets one sweep may ask for (the product of its axes).
MAX_SETS: Final = 100

Bound = Literal["reject", "review"]
_SPEC = re.compile(r"^(?P<category>[a-z][a-z0-9_-]*)\.(?P<bound>reject|review)=(?P<values>[^=]+)$")


@dataclass(frozen=True)
class SweepAxis:
    """One category's reject or review threshold, and the values to try."""

    category: str
    bound: Bound
    values: tuple[float, ...]


@dataclass(frozen=True)
class ThresholdSet:
    """One combination of swept thresholds: (category, bound, value) each."""

    values: tuple[tuple[str, Bound, float], ...]

    @property
    def label(self) -> str:
        return " ".join(f"{c}.{b}={v:g}" for c, b, v in self.values)

    def thresholds(self) -> dict[str, dict[str, float]]:
        found: dict[str, dict[str, float]] = {}
        for category, bound, value in self.values:
            found.setdefault(category, {})[bound] = value
        return found

    def apply(self, policy: Policy) -> Policy:
        """``policy`` at these thresholds (categories it does not have are left alone).

        Raises:
            ConfigError: a review threshold above its reject threshold, naming the set.
        """
        overrides = {}
        for category in policy.categories:
            bounds = self.thresholds().get(category.id)
            if bounds is None:
                continue
            current = dataclasses.asdict(category.thresholds)
            try:
                overrides[category.id] = Thresholds(**{**current, **bounds})
            except ConfigError as exc:
                raise ConfigError(f"--sweep {self.label}: {policy.name} {category.id}: {exc}") from exc
        return policy.with_thresholds(overrides) if overrides else policy


def parse_axis(spec: str) -> SweepAxis:
    """``CATEGORY.reject=0.8,0.85`` (or ``.review=``) as an axis.

    Raises:
        ValueError: naming what is wrong with the spec.
    """
    match = _SPEC.match(spec.strip())
    if match is None:
        raise ValueError(f"{spec!r} is not CATEGORY.reject=V[,V…] or CATEGORY.review=V[,V…]")
    try:
        values = tuple(float(v) for v in match["values"].split(","))
    except ValueError:
        raise ValueError(f"{spec!r}: thresholds are numbers between 0 and 1, comma-separated") from None
    if any(not 0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"{spec!r}: thresholds are between 0 and 1")
    bound: Bound = "reject" if match["bound"] == "reject" else "review"
    return SweepAxis(match["category"], bound, tuple(dict.fromkeys(values)))


def threshold_sets(axes: Sequence[SweepAxis], policies: Sequence[Policy]) -> list[ThresholdSet]:
    """Every combination of the axes' values, checked against the packs.

    Raises:
        ConfigError: a category no pack has, an axis given twice, too many sets, or a set with
            a review threshold above its reject threshold.
    """
    known = {c for p in policies for c in p.category_ids}
    seen: set[tuple[str, str]] = set()
    for axis in axes:
        if axis.category not in known:
            raise ConfigError(f"--sweep: no pack has a category {axis.category!r}; known: {sorted(known)}")
        if (axis.category, axis.bound) in seen:
            raise ConfigError(f"--sweep: {axis.category}.{axis.bound} is given twice; list its values once")
        seen.add((axis.category, axis.bound))
    count = 1
    for axis in axes:
        count *= len(axis.values)
    if count > MAX_SETS:
        raise ConfigError(f"--sweep asks for {count} threshold sets; at most {MAX_SETS}")
    sets = [
        ThresholdSet(tuple((a.category, a.bound, v) for a, v in zip(axes, values, strict=True)))
        for values in itertools.product(*(a.values for a in axes))
    ]
    for threshold_set in sets:
        for policy in policies:
            threshold_set.apply(policy)  # raises for an impossible combination, before any work
    return sets


def rescore(policy: Policy, items: Sequence[ReplayedItem]) -> list[ReplayedItem]:
    """``items`` decided again by ``policy`` from their stored scores."""
    rules = CompiledRules.compile(policy)
    stages: Mapping[str, Literal["pre", "post"]] = {r.id: r.stage for r in policy.rules}
    found = []
    for item in items:
        if not item.scored or item.event is None:
            found.append(item)
            continue
        event = decode_event(item.content_type, orjson.dumps(item.event))
        outcome = decide_scored(policy, rules, event, item.scores, item.clipped)
        rule = outcome.decided_by.id if outcome.decided_by.kind == "rule" else None
        found.append(
            item.model_copy(
                update={
                    "decision": outcome.decision,
                    "decided_by": outcome.decided_by,
                    "reason_code": outcome.reason_code,
                    "rule_stage": stages.get(rule) if rule else None,
                    "flagged": tuple(flagged_categories(policy, outcome, item.scores)),
                }
            )
        )
    return found
