"""A verdict's ``explanation``: what decided it, for enforcement, appeals and analysts.

Bounded (a few categories, short strings) and deterministic: the same item, scores and pack
give the same explanation. The verdict's own fields are not repeated here: ``decided_by``,
``clipped_fields`` (what the model did not read) and ``policy_version`` (the pack) sit beside it.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from streamproc.schemas.common import OutboundModel

__all__ = [
    "MAX_EXPLAINED_CATEGORIES",
    "MAX_EXPLANATION_CHARS",
    "CategoryMargin",
    "Explanation",
    "RuleMatch",
    "WindowSpan",
]

#: At most this many categories are listed (a pack has at most 25).
MAX_EXPLAINED_CATEGORIES: Final = 10
#: Matched text and list entries are cut to this many characters.
MAX_EXPLANATION_CHARS: Final = 100

_Short = Annotated[str, Field(max_length=MAX_EXPLANATION_CHARS)]
_Offset = Annotated[int, Field(ge=0)]


class CategoryMargin(OutboundModel):
    """One category's score against one of its thresholds."""

    category: str
    score: Annotated[float, Field(ge=0.0, le=1.0)]
    threshold: Literal["review", "reject"] = Field(
        description="The highest threshold the score reached; for a category below both, review."
    )
    threshold_value: Annotated[float, Field(ge=0.0, le=1.0)]
    margin: float = Field(
        description="score - threshold_value, rounded to 6 places: at least 0 when the score "
        "reached the threshold, negative by how far it fell short otherwise."
    )
    window: _Offset | None = Field(
        default=None,
        description="Index of the text window the score came from (its highest over the windows), "
        "when the model read the item in several windows.",
    )


class WindowSpan(OutboundModel):
    """The text window the deciding score came from."""

    index: _Offset = Field(description="0 is the first window, which reads every field's head.")
    field: str | None = Field(
        default=None,
        description="The field a further window reads part of; None for the first window.",
    )
    start: _Offset | None = Field(
        default=None, description="[start, end): characters of the field's normalised text it reads."
    )
    end: _Offset | None = None
    windows: Annotated[int, Field(ge=1)] = Field(description="How many windows the model read.")


class RuleMatch(OutboundModel):
    """The rule that decided, and where in the item it matched, when its form can say."""

    rule_id: str
    stage: Literal["pre", "post"]
    field: str | None = Field(
        default=None,
        description="The rule field the match is in (text is the item's folded text, as rules "
        "read it); None when the rule's form places no text (comparisons, comprehensions).",
    )
    text: _Short | None = Field(
        default=None,
        description="What the rule matched there: the regex's first match or the list entry's occurrence.",
    )
    start: _Offset | None = Field(default=None, description="[start, end): offsets of the match in field.")
    end: _Offset | None = None
    list_name: str | None = Field(
        default=None, description="For 'name' in text_lists / owner_lists: the list."
    )
    entry: _Short | None = Field(
        default=None, description="The list's entry that occurred, as the list writes it."
    )


class Explanation(OutboundModel):
    """What decided the verdict. Read it with ``decided_by``, ``clipped_fields`` and
    ``policy_version`` (``streamproc explain`` prints them together)."""

    categories: list[CategoryMargin] = Field(
        default_factory=list,
        max_length=MAX_EXPLAINED_CATEGORIES,
        description="Categories whose score reached their review or reject threshold, the deciding "
        "one first, then by threshold reached and score. When none did (approvals), the "
        "highest-scoring category and how far below its review threshold it stayed. Empty without "
        "scores (a pre-model rule or an error decided).",
    )
    omitted_categories: _Offset = Field(
        default=0, description="Categories that reached a threshold but were left out of the list."
    )
    rule: RuleMatch | None = Field(
        default=None, description="Set when a rule decided, or failed on the item (error kind rule_failed)."
    )
    window: WindowSpan | None = Field(
        default=None,
        description="The window the deciding (or, for approvals, the highest) score came from, "
        "when the model read several.",
    )
    error_kind: str | None = Field(
        default=None,
        description="When an error decided: the inference error's kind (timeout, circuit_open, …) "
        "or rule_failed.",
    )
    artefacts: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(
        default_factory=dict,
        description="SHA-256 of each learned artefact the pack's scores came from, by name: heads "
        "for an embedding_probe pack. Also part of policy_version.",
    )
