"""Which input offsets may be committed: per partition, the contiguous prefix of finished ones.

Items finish out of order (the model answers some faster than others). Committing the
highest finished offset would skip unfinished ones, which a crash would then lose; this
ledger only ever moves a partition's commit position past offsets whose outputs the broker
has acknowledged.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from aiokafka import TopicPartition

__all__ = ["OffsetLedger", "PartitionOffsets"]


class PartitionOffsets:
    """Offsets of one partition, in fetch order (Kafka delivers them ascending)."""

    __slots__ = ("_awaiting_commit", "_done", "_pending", "committed", "position")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()  # from the first unfinished offset on
        self._done: set[int] = set()
        self._awaiting_commit: deque[int] = deque()  # finished, below position, not yet committed
        #: Next offset to consume once everything before it is finished (the commit value).
        self.position: int | None = None
        #: The position last committed to the broker.
        self.committed: int | None = None

    def started(self, offset: int) -> None:
        if self._pending and offset <= self._pending[-1]:
            raise ValueError(f"offset {offset} arrived after {self._pending[-1]}; offsets must ascend")
        self._pending.append(offset)

    def finished(self, offset: int) -> None:
        self._done.add(offset)
        pending, done = self._pending, self._done
        while pending and pending[0] in done:
            first = pending.popleft()
            done.discard(first)
            self._awaiting_commit.append(first)
            self.position = first + 1

    def mark_committed(self, position: int) -> int:
        """Record a commit; returns how many offsets it covered."""
        self.committed = position
        awaiting, covered = self._awaiting_commit, 0
        while awaiting and awaiting[0] < position:
            awaiting.popleft()
            covered += 1
        return covered

    @property
    def unfinished(self) -> int:
        return len(self._pending)

    @property
    def uncommitted(self) -> int:
        """Offsets taken but not yet committed: what a crash now would process again."""
        return len(self._pending) + len(self._awaiting_commit)


class OffsetLedger:
    """Per-partition offset progress of one consumer."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, PartitionOffsets] = {}
        #: Offsets taken and not yet committed, over all partitions.
        self.uncommitted = 0

    def started(self, tp: TopicPartition, offset: int) -> None:
        self._partitions.setdefault(tp, PartitionOffsets()).started(offset)
        self.uncommitted += 1

    def finished(self, tp: TopicPartition, offset: int) -> None:
        partition = self._partitions.get(tp)
        if partition is not None:  # None: the partition was revoked meanwhile
            partition.finished(offset)

    def to_commit(self, tps: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Commit positions that moved since the last commit (of ``tps``, or of all)."""
        chosen = self._partitions
        if tps is not None:
            chosen = {tp: self._partitions[tp] for tp in tps if tp in self._partitions}
        return {
            tp: p.position for tp, p in chosen.items() if p.position is not None and p.position != p.committed
        }

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, position in offsets.items():
            if tp in self._partitions:
                self.uncommitted -= self._partitions[tp].mark_committed(position)

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            partition = self._partitions.pop(tp, None)
            if partition is not None:
                self.uncommitted -= partition.uncommitted

    def unfinished(self, tp: TopicPartition) -> int:
        partition = self._partitions.get(tp)
        return partition.unfinished if partition is not None else 0
