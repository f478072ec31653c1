"""The live verdict each replayed item got: read from the verdict topic over the replay's
window, matched by content type, content id and revision.

Only live automated verdicts count: shadow, final (a human's) and appeal verdicts say
something else. When a revision has several (a pack changed, or it was processed again),
the last one on the topic is the one that stood: verdicts are keyed by content id, so all of
an item's verdicts are in one partition, in the order they were published.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

from streamproc.errors import DecodeError
from streamproc.evaluation.replay.records import ReplayPlan
from streamproc.schemas import Verdict, decode_record
from streamproc.stream.time_range import RangeSource, TimedRecord

__all__ = ["LiveVerdicts", "RevisionKey", "read_live_verdicts"]

RevisionKey = tuple[str, str, int]


@dataclass
class LiveVerdicts:
    by_revision: dict[RevisionKey, Verdict] = field(default_factory=dict)
    #: Live automated verdicts read in the window (of any item).
    read: int = 0
    #: Shadow, final and appeal verdicts left out, and records that are not verdicts.
    other_kinds: int = 0
    undecodable: int = 0

    def add(self, record: TimedRecord, wanted: Container[RevisionKey], window: tuple[int, int]) -> None:
        """Take one verdict record (outside ``window`` or not ``wanted``: counted at most)."""
        if not window[0] <= record.timestamp_ms < window[1]:
            return
        try:
            verdict = decode_record(Verdict, record.value, "verdict")
        except DecodeError:
            self.undecodable += 1
            return
        if verdict.kind != "automated":
            self.other_kinds += 1
            return
        self.read += 1
        key = (verdict.content_type, verdict.content_id, verdict.revision)
        if key in wanted:
            self.by_revision[key] = verdict


async def read_live_verdicts(
    source: RangeSource, plan: ReplayPlan, wanted: Container[RevisionKey]
) -> LiveVerdicts:
    """The live verdicts of the ``wanted`` revisions, from the plan's verdict ranges."""
    found = LiveVerdicts()
    window = (plan.from_ms, plan.to_ms + int(plan.verdict_margin_seconds * 1000))
    async for record in source.read(plan.verdicts, {}):
        found.add(record, wanted, window)
    return found
