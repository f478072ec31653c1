"""The SQLite join store: idempotent adds, reopening, bounds."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from streamproc.quality.store import QualityStore, ShadowAgreement, StoreError, VerdictCount
from streamproc.schemas import AuditSample, DecidedBy, HumanDecision, SourceRef
from tests.unit.test_quality_join import NOW, label, verdict

REF = SourceRef(topic="moderation.labels.v1", partition=0, offset=7)


def open_store(path: Path, *, max_items: int = 1000, days: float = 30) -> QualityStore:
    return QualityStore(path / "quality.sqlite3", retention=timedelta(days=days), max_items=max_items)


def final(**overrides: object) -> object:
    human = HumanDecision(
        source="review",
        labeler_id="rev",
        label_id="lab-1",
        original_decision="review",
        original_idempotency_key="listing:L-1:0:listings@1",
        overturned=True,
    )
    return verdict(
        decision="approve",
        decided_by=DecidedBy(kind="human", id="rev"),
        human=human,
        idempotency_key="listing:L-1:0:listings@1:human:lab-1",
        **overrides,
    )


def test_adds_are_idempotent(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        live = verdict(decision="reject", flagged_categories=["spam"])
        assert store.add_verdict(live) is True
        assert store.add_verdict(live) is False
        assert store.add_verdict(live.model_copy(update={"decision": "approve"})) is False  # first copy wins
        assert store.add_label(label(), REF) is True
        assert store.add_label(label(true_categories=["spam"]), REF) is False
        sample = AuditSample(verdict=live, stratum="reject", probability=0.25, weight=4.0)
        assert store.add_audit(sample) is True
        assert store.add_audit(sample) is False
        human = final()
        assert store.add_final(human) is True  # type: ignore[arg-type]
        assert store.add_final(human) is False  # type: ignore[arg-type]

        assert store.item_count() == 1
        assert store.verdict_counts() == [VerdictCount("listings@1", "live", "reject", 1)]
        assert store.label_counts() == {"qa_audit": 1}
        [item] = store.labeled_items()
        assert [v.decision for v in item.verdicts] == ["reject"]
        assert item.verdicts[0].audit_weight == 4.0 and item.audit_weight == 4.0
        assert [lab.true_categories for lab in item.labels] == [frozenset()]
        assert [(h.source, h.overturned, h.count) for h in store.human_counts()] == [("review", True, 1)]


def test_one_verdict_per_policy_version_and_mode(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        assert store.add_verdict(verdict())
        assert store.add_verdict(
            verdict(policy_version="listings@2", idempotency_key="listing:L-1:0:listings@2")
        )
        assert store.add_verdict(verdict(mode="shadow", policy_version="listings@2", decision="reject"))
        assert store.item_count() == 1
        assert len(store.verdict_counts()) == 3
        # the original is the first live verdict stored
        original = store.original_verdict("listing", "L-1", 0)
        assert original is not None and original.policy_version == "listings@1"
        assert store.shadow_agreement() == [ShadowAgreement("listings@2", compared=1, agreed=0)]


def test_human_verdicts_are_not_automated_verdicts(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        with pytest.raises(ValueError, match="add_final"):
            store.add_verdict(final())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="not a final verdict"):
            store.add_final(verdict())


def test_settling_labels_and_finals(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.add_label(label(label_id="qa"), REF)
        store.add_label(label(label_id="rev", source="review", decision="approve"), REF)
        store.add_label(label(label_id="app", source="appeal", decision="reject"), REF)
        assert [(lab.label_id, ref) for lab, ref in store.settling_labels("listing", "L-1", 0)] == [
            ("rev", REF),
            ("app", REF),
        ]
        assert store.original_verdict("listing", "L-1", 0) is None
        assert not store.has_final("listing:L-1:0:listings@1:human:lab-1")
        store.add_final(final())  # type: ignore[arg-type]
        assert store.has_final("listing:L-1:0:listings@1:human:lab-1")


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.add_verdict(verdict(decision="reject", flagged_categories=["spam"]))
        store.add_label(label(true_categories=["spam"]), REF)
        store.add_audit(AuditSample(verdict=verdict(), stratum="s", probability=0.5, weight=2.0))
        before = (list(store.labeled_items()), store.verdict_counts(), store.label_counts())
    with open_store(tmp_path) as store:
        assert (list(store.labeled_items()), store.verdict_counts(), store.label_counts()) == before
        assert store.add_label(label(true_categories=["spam"]), REF) is False  # redelivery after restart


def test_prune_drops_revisions_past_retention(tmp_path: Path) -> None:
    with open_store(tmp_path, days=30) as store:
        old = NOW - timedelta(days=31)
        store.add_verdict(
            verdict(content_id="old", produced_at=old, idempotency_key="listing:old:0:listings@1")
        )
        store.add_label(label(content_id="old", created_at=old), REF)
        store.add_verdict(verdict(content_id="new", idempotency_key="listing:new:0:listings@1"))
        # a recent label keeps an old verdict's revision
        store.add_verdict(
            verdict(content_id="kept", produced_at=old, idempotency_key="listing:kept:0:listings@1")
        )
        store.add_label(label(label_id="recent", content_id="kept", created_at=NOW), REF)
        assert store.prune(NOW) == 1
        assert store.item_count() == 2
        assert store.original_verdict("listing", "old", 0) is None
        assert store.label_counts() == {"qa_audit": 1}  # the old label went with its revision
        assert store.original_verdict("listing", "kept", 0) is not None


def test_prune_caps_the_number_of_revisions_oldest_first(tmp_path: Path) -> None:
    with open_store(tmp_path, max_items=3) as store:
        for index in range(5):
            store.add_verdict(
                verdict(
                    content_id=f"L-{index}",
                    produced_at=NOW - timedelta(hours=10 - index),
                    idempotency_key=f"listing:L-{index}:0:listings@1",
                )
            )
        assert store.prune(NOW) == 2
        assert store.item_count() == 3
        kept = [i for i in range(5) if store.original_verdict("listing", f"L-{i}", 0) is not None]
        assert kept == [2, 3, 4]
        assert store.prune(NOW) == 0


def test_store_errors_are_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="STREAMPROC_QUALITY__DATA_DIR"):
        QualityStore(blocker / "quality.sqlite3", retention=timedelta(days=1), max_items=1)
    store = open_store(tmp_path)
    store.close()
    with pytest.raises(StoreError, match="writing the quality store"):
        store.add_verdict(verdict())
    with pytest.raises(StoreError, match="reading the quality store"):
        store.item_count()
