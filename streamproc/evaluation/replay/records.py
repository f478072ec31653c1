"""What a replay keeps in its folder, line for line: the plan it follows and each record's result.

``plan.json`` fixes the offsets a replay reads when it starts, so a rerun after a crash reads
the same records even while the topics grow. ``results.jsonl`` holds one line per replayed
item and pack (or per record that does not decode); ``progress.json`` the positions up to
which every record has its lines.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from streamproc.schemas import ContentType, DecidedBy, Decision
from streamproc.stream.time_range import PartitionRange

__all__ = ["BadRecord", "Entry", "PackRef", "Position", "Progress", "ReplayPlan", "ReplayedItem"]


class _Frozen(BaseModel):
    # extra="forbid": a file of another shape fails to load instead of losing keys.
    model_config = ConfigDict(frozen=True, extra="forbid")


class PackRef(_Frozen):
    """A candidate pack as the replay ran it: a rerun must run the same version."""

    name: str
    version: str
    content_type: ContentType
    path: str


class ReplayPlan(_Frozen):
    """The replay's arguments and the offsets they stand for, fixed at its first start."""

    from_time: AwareDatetime
    to_time: AwareDatetime
    #: Verdicts are read up to ``to_time`` plus this (a verdict follows its item).
    verdict_margin_seconds: float
    packs: tuple[PackRef, ...]
    #: Input topic per content type the packs read.
    topics: dict[ContentType, str]
    verdict_topic: str
    inputs: tuple[PartitionRange, ...]
    verdicts: tuple[PartitionRange, ...]
    planned_at: AwareDatetime

    @property
    def from_ms(self) -> int:
        return _ms(self.from_time)

    @property
    def to_ms(self) -> int:
        return _ms(self.to_time)

    @property
    def records(self) -> int:
        """Input records in the planned ranges (a few may fall outside the time range)."""
        return sum(r.records for r in self.inputs)

    def difference(self, other: ReplayPlan) -> str | None:
        """What differs between the arguments of two plans, or None."""
        for name, flag in (
            ("from_time", "--from"),
            ("to_time", "--to"),
            ("verdict_margin_seconds", "--verdict-margin"),
            ("verdict_topic", "the verdict topic"),
            ("topics", "the input topics"),
        ):
            if getattr(self, name) != getattr(other, name):
                return f"{flag} ({getattr(self, name)} there, {getattr(other, name)} now)"
        mine, theirs = [p.version for p in self.packs], [p.version for p in other.packs]
        if mine != theirs:
            return f"the packs ({', '.join(mine)} there, {', '.join(theirs)} now)"
        return None


class ReplayedItem(_Frozen):
    """What one candidate pack decided for one input record."""

    kind: Literal["item"] = "item"
    pack: str
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    content_type: ContentType
    content_id: str
    revision: int
    decision: Decision
    decided_by: DecidedBy
    reason_code: str
    #: The deciding rule's stage, when a rule decided.
    rule_stage: Literal["pre", "post"] | None = None
    flagged: tuple[str, ...] = ()
    #: The deciding scores, calibrated (empty when a pre-rule or an error decided).
    scores: dict[str, float] = Field(default_factory=dict)
    clipped: tuple[str, ...] = ()
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    second_model_requests: int = 0
    #: The event as published, kept for items the model scored: a sweep's post-rules read it.
    event: dict[str, Any] | None = None

    @property
    def revision_key(self) -> tuple[str, str, int]:
        return (self.content_type, self.content_id, self.revision)

    @property
    def scored(self) -> bool:
        return bool(self.scores) and self.decided_by.kind != "error"


class BadRecord(_Frozen):
    """An input record that is not a valid event (the worker dead-letters it)."""

    kind: Literal["bad"] = "bad"
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    error: str


Entry = Annotated[ReplayedItem | BadRecord, Field(discriminator="kind")]


class Position(_Frozen):
    topic: str
    partition: int
    #: Every record before it has its lines in results.jsonl.
    offset: int


class Progress(_Frozen):
    positions: tuple[Position, ...] = ()
    #: Seconds spent replaying, over every run of this replay.
    busy_seconds: float = 0.0
    complete: bool = False


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
