"""The quality service's join store: verdicts, audit weights, labels, appeals and final and
appeal verdicts per content revision, in SQLite (WAL), so that a restart keeps them.

Every record is stored under its content revision (content type, id, revision). Adding is
idempotent: a verdict is unique per (revision, policy version, mode), an audit sample per
verdict idempotency key, a label per ``label_id``, an appeal per ``appeal_id`` and a final
or appeal verdict per idempotency key, and the first copy wins. Appeal verdicts are kept
apart from the automated verdicts: they are never scored and never an original. The store
is bounded: ``prune`` drops revisions whose newest record is older than the retention (with
their appeals, answered or not), then the oldest revisions beyond ``max_items``.
Errors are raised as StoreError, never swallowed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

import orjson

from streamproc.quality.join import JoinLabel, JoinVerdict, LabeledItem, TrainingLabel
from streamproc.quality.store_db import StoreError, Transaction, connect
from streamproc.schemas import (
    AppealEvent,
    AuditSample,
    LabelEvent,
    SourceRef,
    Verdict,
    VerdictMode,
    encode,
)

__all__ = ["HumanCount", "QualityStore", "ShadowAgreement", "StoreError", "VerdictCount"]

#: Revisions removed per DELETE while pruning, so that one prune never holds the lock long.
_PRUNE_BATCH = 5000


@dataclass(frozen=True)
class VerdictCount:
    policy_version: str
    mode: VerdictMode
    decision: str
    count: int


@dataclass(frozen=True)
class ShadowAgreement:
    """A shadow policy version against the live verdicts of the same revisions."""

    policy_version: str
    compared: int
    agreed: int

    @property
    def ratio(self) -> float:
        return self.agreed / self.compared if self.compared else 0.0


@dataclass(frozen=True)
class HumanCount:
    policy_version: str
    source: str
    overturned: bool
    count: int


class QualityStore:
    """One SQLite file; use from one thread (the service's event loop)."""

    def __init__(self, path: Path, *, retention: timedelta, max_items: int) -> None:
        self.path = path
        self._retention = retention
        self._max_items = max_items
        self._db = connect(path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------

    def add_verdict(self, verdict: Verdict) -> bool:
        """Store an automated verdict; False if one for its revision, version and mode is held."""
        if verdict.kind == "final":
            raise ValueError("human verdicts go to add_final")
        if verdict.kind == "appeal":
            raise ValueError("appeal verdicts go to add_appeal_verdict")
        return self._add(
            "verdicts",
            _revision(verdict),
            verdict.produced_at.timestamp(),
            policy_version=verdict.policy_version,
            mode=verdict.mode,
            decision=verdict.decision,
            flagged=_json(sorted(verdict.flagged_categories)),
            categories=_json(sorted(verdict.scores)),
            decided_by=verdict.decided_by.kind,
            idempotency_key=verdict.idempotency_key,
            produced_at=verdict.produced_at.timestamp(),
            # Only live verdicts can be an original, read back whole.
            body=encode(verdict).decode() if verdict.kind == "automated" else None,
        )

    def add_audit(self, sample: AuditSample) -> bool:
        """Store the audit weight of a sampled verdict; False if already held."""
        verdict = sample.verdict
        return self._add(
            "audit",
            _revision(verdict),
            verdict.produced_at.timestamp(),
            idempotency_key=verdict.idempotency_key,
            weight=sample.weight,
        )

    def add_label(self, label: LabelEvent, read_from: SourceRef) -> bool:
        """Store a label; False if one with its ``label_id`` is held."""
        return self._add(
            "labels",
            _revision(label),
            label.created_at.timestamp(),
            label_id=label.label_id,
            labeler_id=label.labeler_id,
            source=label.source,
            true_categories=_json(sorted(set(label.true_categories))),
            decision=label.decision,
            created_at=label.created_at.timestamp(),
            body=label.model_dump_json(),
            read_from=read_from.model_dump_json(),
        )

    def add_final(self, verdict: Verdict) -> bool:
        """Store a final (human) verdict read back from the verdict topic; False if already held."""
        if verdict.kind != "final" or verdict.human is None:
            raise ValueError("not a final verdict")
        return self._add(
            "finals",
            _revision(verdict),
            verdict.produced_at.timestamp(),
            idempotency_key=verdict.idempotency_key,
            policy_version=verdict.policy_version,
            source=verdict.human.source,
            overturned=int(verdict.human.overturned),
            produced_at=verdict.produced_at.timestamp(),
        )

    def add_appeal(self, appeal: AppealEvent, read_from: SourceRef) -> bool:
        """Store an appeal (statement included); False if one with its ``appeal_id`` is held."""
        return self._add(
            "appeals",
            _revision(appeal),
            appeal.created_at.timestamp(),
            appeal_id=appeal.appeal_id,
            created_at=appeal.created_at.timestamp(),
            body=appeal.model_dump_json(),
            read_from=read_from.model_dump_json(),
        )

    def add_appeal_verdict(self, verdict: Verdict) -> bool:
        """Store an appeal verdict read back from the verdict topic; False if already held."""
        if verdict.kind != "appeal" or verdict.appeal is None:
            raise ValueError("not an appeal verdict")
        stands = verdict.appeal.stands
        return self._add(
            "appeal_verdicts",
            _revision(verdict),
            verdict.produced_at.timestamp(),
            idempotency_key=verdict.idempotency_key,
            appeal_id=verdict.appeal.appeal_id,
            decision=verdict.decision,
            stands=None if stands is None else int(stands),
            produced_at=verdict.produced_at.timestamp(),
        )

    def prune(self, now: datetime) -> int:
        """Drop revisions older than the retention, then the oldest beyond ``max_items``."""
        cutoff = (now - self._retention).timestamp()
        removed = 0
        with self._write():
            while True:
                cursor = self._db.execute(
                    "DELETE FROM items WHERE id IN (SELECT id FROM items WHERE updated_at < ? LIMIT ?)",
                    (cutoff, _PRUNE_BATCH),
                )
                removed += cursor.rowcount
                if cursor.rowcount < _PRUNE_BATCH:
                    break
            excess = self.item_count() - self._max_items
            if excess > 0:
                cursor = self._db.execute(
                    "DELETE FROM items WHERE id IN (SELECT id FROM items ORDER BY updated_at, id LIMIT ?)",
                    (excess,),
                )
                removed += cursor.rowcount
        return removed

    # -- reading -------------------------------------------------------------------------

    def original_verdict(self, content_type: str, content_id: str, revision: int) -> Verdict | None:
        """The first automated live verdict stored for the revision, if any."""
        row = self._read(
            "SELECT v.body FROM verdicts v JOIN items i ON i.id = v.item_id WHERE i.content_type = ? "
            "AND i.content_id = ? AND i.revision = ? AND v.mode = 'live' ORDER BY v.seq LIMIT 1",
            (content_type, content_id, revision),
        )
        return Verdict.model_validate_json(row[0][0]) if row else None

    def settling_labels(
        self, content_type: str, content_id: str, revision: int
    ) -> list[tuple[LabelEvent, SourceRef]]:
        """Review and appeal outcomes with a decision for the revision, in arrival order."""
        rows = self._read(
            "SELECT l.body, l.read_from FROM labels l JOIN items i ON i.id = l.item_id "
            "WHERE i.content_type = ? AND i.content_id = ? AND i.revision = ? "
            "AND l.source IN ('review', 'appeal') AND l.decision IN ('approve', 'reject') ORDER BY l.rowid",
            (content_type, content_id, revision),
        )
        return [
            (LabelEvent.model_validate_json(body), SourceRef.model_validate_json(read_from))
            for body, read_from in rows
        ]

    def open_appeals(
        self, content_type: str, content_id: str, revision: int
    ) -> list[tuple[AppealEvent, SourceRef]]:
        """Appeals of the revision whose appeal verdict was not read back yet, in arrival order."""
        rows = self._read(
            "SELECT a.body, a.read_from FROM appeals a JOIN items i ON i.id = a.item_id "
            "WHERE i.content_type = ? AND i.content_id = ? AND i.revision = ? AND NOT EXISTS "
            "(SELECT 1 FROM appeal_verdicts v WHERE v.item_id = a.item_id AND v.appeal_id = a.appeal_id) "
            "ORDER BY a.rowid",
            (content_type, content_id, revision),
        )
        return [
            (AppealEvent.model_validate_json(body), SourceRef.model_validate_json(read_from))
            for body, read_from in rows
        ]

    def has_final(self, idempotency_key: str) -> bool:
        """Whether a final verdict with this key was read back from the verdict topic."""
        return bool(self._read("SELECT 1 FROM finals WHERE idempotency_key = ?", (idempotency_key,)))

    def labeled_items(self) -> Iterator[LabeledItem]:
        """Every revision with at least one label, with its automated verdicts and audit weights."""
        labels: dict[int, list[JoinLabel]] = {}
        for item_id, label_id, labeler_id, source, categories in self._read(
            "SELECT item_id, label_id, labeler_id, source, true_categories FROM labels "
            "ORDER BY item_id, rowid"
        ):
            labels.setdefault(item_id, []).append(
                JoinLabel(label_id, labeler_id, source, frozenset(orjson.loads(categories)))
            )
        verdicts: dict[int, list[JoinVerdict]] = {}
        for item_id, version, mode, decision, flagged, categories, decided_by, weight in self._read(
            "SELECT v.item_id, v.policy_version, v.mode, v.decision, v.flagged, v.categories, v.decided_by, "
            "a.weight FROM verdicts v JOIN (SELECT DISTINCT item_id FROM labels) l ON l.item_id = v.item_id "
            "LEFT JOIN audit a ON a.idempotency_key = v.idempotency_key ORDER BY v.item_id, v.seq"
        ):
            verdicts.setdefault(item_id, []).append(
                JoinVerdict(
                    policy_version=version,
                    mode=mode,
                    decision=decision,
                    flagged=frozenset(orjson.loads(flagged)),
                    categories=frozenset(orjson.loads(categories)),
                    decided_by=decided_by,
                    audit_weight=weight,
                )
            )
        for item_id, item_labels in labels.items():
            held = tuple(verdicts.get(item_id, ()))
            # The revision was drawn through its first sampled live verdict.
            weight = next((v.audit_weight for v in held if v.mode == "live" and v.audit_weight), None)
            yield LabeledItem(tuple(item_labels), held, weight)

    def training_labels(self) -> list[TrainingLabel]:
        """Each labeled revision that has a live verdict: its newest label's categories (a
        reviewer's or an appeal's outcome replaces an earlier one) and where its content was
        read, for exporting it as training data."""
        rows = self._read(
            "SELECT i.content_type, i.content_id, i.revision, l.true_categories, l.source, (SELECT v.body "
            "FROM verdicts v WHERE v.item_id = i.id AND v.mode = 'live' ORDER BY v.seq LIMIT 1) FROM items i "
            "JOIN labels l ON l.item_id = i.id WHERE l.rowid = (SELECT l2.rowid FROM labels l2 WHERE "
            "l2.item_id = i.id ORDER BY l2.created_at DESC, l2.rowid DESC LIMIT 1) ORDER BY i.id"
        )
        return [
            TrainingLabel(
                kind,
                cid,
                rev,
                tuple(sorted(orjson.loads(truth))),
                by,
                Verdict.model_validate_json(body).source,
            )
            for kind, cid, rev, truth, by, body in rows
            if body is not None
        ]

    def verdict_counts(self) -> list[VerdictCount]:
        """Automated verdicts held, per policy version, mode and decision."""
        rows = self._read(
            "SELECT policy_version, mode, decision, COUNT(*) FROM verdicts GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
        return [VerdictCount(*row) for row in rows]

    def shadow_agreement(self) -> list[ShadowAgreement]:
        """Per shadow policy version: revisions with a live verdict too, and how many agree.

        A revision's live verdict is its first one stored.
        """
        rows = self._read(
            "SELECT s.policy_version, COUNT(*), SUM(s.decision = l.decision) FROM verdicts s "
            "JOIN verdicts l ON l.seq = (SELECT MIN(seq) FROM verdicts WHERE item_id = s.item_id "
            "AND mode = 'live') WHERE s.mode = 'shadow' GROUP BY 1 ORDER BY 1"
        )
        return [ShadowAgreement(*row) for row in rows]

    def label_counts(self) -> dict[str, int]:
        """Labels held, per source."""
        return dict(self._read("SELECT source, COUNT(*) FROM labels GROUP BY 1"))

    def human_counts(self) -> list[HumanCount]:
        """Final verdicts read back, per policy version, source and overturned."""
        rows = self._read(
            "SELECT policy_version, source, overturned, COUNT(*) FROM finals "
            "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
        return [
            HumanCount(version, source, bool(overturned), count)
            for version, source, overturned, count in rows
        ]

    def item_count(self) -> int:
        """Content revisions held."""
        return cast(int, self._read("SELECT COUNT(*) FROM items")[0][0])

    # -- internals -----------------------------------------------------------------------

    def _add(self, table: str, revision: tuple[str, str, int], at: float, **row: object) -> bool:
        """One transaction: the revision's row (touched at ``at``), then ``row`` into ``table``
        unless its unique key is held. True if the row was added."""
        columns = ", ".join(("item_id", *row))
        marks = ", ".join("?" * (len(row) + 1))
        with self._write():
            item = self._item(*revision, at)
            cursor = self._db.execute(
                # table and column names are this module's constants, never input
                f"INSERT OR IGNORE INTO {table} ({columns}) VALUES ({marks})",  # noqa: S608
                (item, *row.values()),
            )
            return cursor.rowcount == 1

    def _item(self, content_type: str, content_id: str, revision: int, at: float) -> int:
        self._db.execute(
            "INSERT INTO items (content_type, content_id, revision, updated_at) VALUES (?,?,?,?) "
            "ON CONFLICT (content_type, content_id, revision) "
            "DO UPDATE SET updated_at = MAX(updated_at, excluded.updated_at)",
            (content_type, content_id, revision, at),
        )
        row = self._db.execute(
            "SELECT id FROM items WHERE content_type = ? AND content_id = ? AND revision = ?",
            (content_type, content_id, revision),
        ).fetchone()
        return cast(int, row[0])

    def _write(self) -> Transaction:
        return Transaction(self._db, self.path)

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"reading the quality store {self.path} failed: {exc}") from exc


def _revision(record: Verdict | LabelEvent | AppealEvent) -> tuple[str, str, int]:
    return record.content_type, record.content_id, record.revision


def _json(value: object) -> str:
    return orjson.dumps(value).decode()
