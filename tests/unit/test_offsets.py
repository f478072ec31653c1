from __future__ import annotations

import pytest
from aiokafka import TopicPartition

from streamproc.stream.offsets import OffsetLedger, PartitionOffsets

TP0 = TopicPartition("content.listings.v1", 0)
TP1 = TopicPartition("content.listings.v1", 1)


def test_position_moves_only_over_the_contiguous_prefix_of_finished_offsets() -> None:
    partition = PartitionOffsets()
    for offset in (10, 11, 12, 13):
        partition.started(offset)
    partition.finished(12)
    partition.finished(13)
    assert partition.position is None  # 10 and 11 are still running
    partition.finished(10)
    assert partition.position == 11
    partition.finished(11)
    assert partition.position == 14
    assert partition.unfinished == 0
    assert partition.uncommitted == 4  # finished, but a crash now would process them again
    assert partition.mark_committed(14) == 4
    assert partition.uncommitted == 0


def test_offsets_must_ascend() -> None:
    partition = PartitionOffsets()
    partition.started(5)
    with pytest.raises(ValueError, match="must ascend"):
        partition.started(5)


def test_ledger_reports_only_moved_positions_of_the_asked_partitions() -> None:
    ledger = OffsetLedger()
    ledger.started(TP0, 0)
    ledger.started(TP1, 7)
    ledger.finished(TP0, 0)
    ledger.finished(TP1, 7)
    assert ledger.to_commit() == {TP0: 1, TP1: 8}
    assert ledger.uncommitted == 2
    assert ledger.to_commit([TP1]) == {TP1: 8}
    ledger.committed({TP0: 1})
    assert ledger.to_commit() == {TP1: 8}
    ledger.committed({TP1: 8})
    assert ledger.to_commit() == {}
    assert ledger.uncommitted == 0


def test_a_forgotten_partition_ignores_late_finishes() -> None:
    ledger = OffsetLedger()
    ledger.started(TP0, 3)
    assert ledger.unfinished(TP0) == 1
    ledger.forget([TP0])
    ledger.finished(TP0, 3)  # an abandoned item finishing after revocation
    assert ledger.to_commit() == {}
    assert (ledger.unfinished(TP0), ledger.uncommitted) == (0, 0)
