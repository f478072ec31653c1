"""A replay's folder on disk: the plan, the results appended as they come, the checkpoint.

Crash safety comes from the order of writes: result lines are appended and fsync'd before
``progress.json`` (replaced atomically) names a position past them. A crash can leave lines
beyond the last checkpoint, or half a line at the end: on resume, the half line is cut off
and records that already have lines are not replayed again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Final

from pydantic import TypeAdapter, ValidationError

from streamproc.errors import ConfigError
from streamproc.evaluation.replay.records import BadRecord, Entry, Progress, ReplayedItem, ReplayPlan

__all__ = [
    "PLAN",
    "PROGRESS",
    "RESULTS",
    "ResultLog",
    "load_plan",
    "load_progress",
    "load_results",
    "save_plan",
    "save_progress",
]

PLAN: Final = "plan.json"
RESULTS: Final = "results.jsonl"
PROGRESS: Final = "progress.json"

#: One line of results.jsonl, whichever kind.
_LINE: Final = TypeAdapter[ReplayedItem | BadRecord](Entry)


def save_plan(out: Path, plan: ReplayPlan) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _replace(out / PLAN, plan.model_dump_json(indent=2).encode())


def load_plan(out: Path) -> ReplayPlan | None:
    """The plan of the replay in ``out``, None when none was started there.

    Raises:
        ConfigError: the file is not a replay plan.
    """
    path = out / PLAN
    if not path.is_file():
        return None
    try:
        return ReplayPlan.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise ConfigError(
            f"{path} is not a replay plan ({exc.error_count()} problems); use another --out"
        ) from exc


def load_progress(out: Path) -> Progress:
    path = out / PROGRESS
    if not path.is_file():
        return Progress()
    try:
        return Progress.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise ConfigError(
            f"{path} is damaged ({exc.error_count()} problems); remove the folder and rerun"
        ) from exc


def save_progress(out: Path, progress: Progress) -> None:
    _replace(out / PROGRESS, progress.model_dump_json().encode())


def load_results(out: Path) -> list[ReplayedItem | BadRecord]:
    """Every whole line of results.jsonl, the first of each (record, pack) only; a half-written
    last line (a crash while appending) is cut from the file."""
    path = out / RESULTS
    if not path.is_file():
        return []
    data = path.read_bytes()
    whole = data.rfind(b"\n") + 1
    if whole < len(data):
        with path.open("r+b") as file:
            file.truncate(whole)
            _sync(file)
    entries: dict[tuple[str, int, int, str], ReplayedItem | BadRecord] = {}
    for number, line in enumerate(data[:whole].splitlines(), start=1):
        try:
            entry = _LINE.validate_json(line)
        except ValidationError as exc:
            raise ConfigError(f"{path}:{number} is not a replay result; remove the folder and rerun") from exc
        pack = entry.pack if isinstance(entry, ReplayedItem) else ""
        entries.setdefault((entry.topic, entry.partition, entry.offset, pack), entry)
    return list(entries.values())


class ResultLog:
    """results.jsonl opened for appending: each append reaches the file at once (a crash of the
    process keeps it), ``sync`` makes it durable (a crash of the machine keeps it)."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = (out / RESULTS).open("ab")

    def append(self, entries: Iterable[ReplayedItem | BadRecord]) -> None:
        self._file.write(b"".join(e.model_dump_json().encode() + b"\n" for e in entries))
        self._file.flush()

    def sync(self) -> None:
        _sync(self._file)

    def close(self) -> None:
        self.sync()
        self._file.close()


def _sync(file: IO[bytes]) -> None:
    file.flush()
    os.fsync(file.fileno())


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a crash leaves the old file or the new one."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as file:
        file.write(data)
        _sync(file)
    temporary.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)
