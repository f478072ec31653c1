"""The join store's SQLite side: its tables, opening the file, and write transactions
(see streamproc.quality.store for what is stored and why)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import TracebackType
from typing import Final

from streamproc.errors import StreamprocError

__all__ = ["SCHEMA", "StoreError", "Transaction", "connect"]

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    content_type TEXT NOT NULL,
    content_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (content_type, content_id, revision)
);
CREATE INDEX IF NOT EXISTS items_by_age ON items (updated_at);
CREATE TABLE IF NOT EXISTS verdicts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    policy_version TEXT NOT NULL,
    mode TEXT NOT NULL,
    decision TEXT NOT NULL,
    flagged TEXT NOT NULL,
    categories TEXT NOT NULL,
    decided_by TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    produced_at REAL NOT NULL,
    body TEXT,
    UNIQUE (item_id, policy_version, mode)
);
CREATE INDEX IF NOT EXISTS verdicts_by_key ON verdicts (idempotency_key);
CREATE TABLE IF NOT EXISTS audit (
    idempotency_key TEXT PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    weight REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_item ON audit (item_id);
CREATE TABLE IF NOT EXISTS labels (
    label_id TEXT PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    labeler_id TEXT NOT NULL,
    source TEXT NOT NULL,
    true_categories TEXT NOT NULL,
    decision TEXT,
    created_at REAL NOT NULL,
    body TEXT NOT NULL,
    read_from TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS labels_by_item ON labels (item_id);
CREATE TABLE IF NOT EXISTS finals (
    idempotency_key TEXT PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    policy_version TEXT NOT NULL,
    source TEXT NOT NULL,
    overturned INTEGER NOT NULL,
    produced_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS finals_by_item ON finals (item_id);
CREATE TABLE IF NOT EXISTS appeals (
    appeal_id TEXT PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    body TEXT NOT NULL,
    read_from TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS appeals_by_item ON appeals (item_id);
CREATE TABLE IF NOT EXISTS appeal_verdicts (
    idempotency_key TEXT PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    appeal_id TEXT NOT NULL,
    decision TEXT NOT NULL,
    stands INTEGER,
    produced_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS appeal_verdicts_by_item ON appeal_verdicts (item_id);
"""


class StoreError(StreamprocError):
    """The join store could not be opened, read or written."""

    kind = "store"


def connect(path: Path) -> sqlite3.Connection:
    """Open (or create) the store at ``path``, tables included, in autocommit mode."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a process crash loses nothing committed; only an OS crash may lose the
        # last transactions (their records are then read again from uncommitted offsets
        # only if the consumer had not committed them yet).
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(SCHEMA)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(
            f"cannot open the quality store {path}: {exc}; point STREAMPROC_QUALITY__DATA_DIR "
            "at a writable folder"
        ) from exc
    return db


class Transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK and StoreError."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path

    def __enter__(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"writing the quality store {self._path} failed: {exc}") from exc

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                self._db.execute("ROLLBACK")
                raise StoreError(f"writing the quality store {self._path} failed: {error}") from error
            return
        self._db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"writing the quality store {self._path} failed: {exc}") from exc
