"""Labeled datasets: JSONL, one item per line, each an event as published plus its true categories.

```
{"content_type": "listing", "event": {...ListingEvent...}, "true_categories": ["counterfeit"]}
```
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streamproc.errors import ConfigError, StreamprocError
from streamproc.policy import Policy
from streamproc.schemas import ContentEvent, ContentType, decode_event

__all__ = ["DatasetError", "LabeledItem", "check_categories", "load_dataset"]

_KEYS = {"content_type", "event", "true_categories"}
_FORMAT = (
    'each line must be a JSON object {"content_type": "listing"|"video", "event": {...}, '
    '"true_categories": [...]}'
)
#: Problems listed before the rest are summarised as a count.
_MAX_SHOWN = 20


class DatasetError(ConfigError):
    """A labeled dataset that cannot be evaluated; the message names every bad line."""


@dataclass(frozen=True)
class LabeledItem:
    """One event with the categories a person judged it to violate (none: clean)."""

    line: int
    content_type: ContentType
    event: ContentEvent
    true_categories: tuple[str, ...]

    @property
    def id(self) -> str:
        """``content_type:content_id:revision``, unique within a dataset."""
        return f"{self.event.content_type}:{self.event.content_id}:{self.event.revision}"


def load_dataset(path: Path) -> list[LabeledItem]:
    """Read and validate every line; blank lines are skipped.

    Raises:
        DatasetError: the file is missing or empty, or some lines are malformed (each is
            named with its line number, the problem and the fix).
    """
    try:
        raw_lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise DatasetError(
            f"cannot read dataset {path}: {exc.strerror}; pass an existing JSONL file"
        ) from exc
    items: list[LabeledItem] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        try:
            item = _parse_line(number, raw)
        except _LineError as exc:
            problems.append(f"{path}:{number}: {exc}")
            continue
        if item.id in seen:
            problems.append(
                f"{path}:{number}: item {item.id} already appears on line {seen[item.id]}; "
                "keep one line per item and revision"
            )
            continue
        seen[item.id] = number
        items.append(item)
    if problems:
        raise DatasetError(_summary(path, problems))
    if not items:
        raise DatasetError(f"dataset {path} has no items; {_FORMAT}")
    return items


def check_categories(path: Path, items: Sequence[LabeledItem], policies: Sequence[Policy]) -> None:
    """Every true category must be one the packs define (any of them, when comparing).

    Raises:
        DatasetError: naming the unknown categories, the lines that use them and the known ones.
    """
    known = {c for policy in policies for c in policy.category_ids}
    unknown: dict[str, list[int]] = {}
    for item in items:
        for category in item.true_categories:
            if category not in known:
                unknown.setdefault(category, []).append(item.line)
    if unknown:
        names = ", ".join(
            f"{category!r} (line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines[:5]))}"
            f"{', …' if len(lines) > 5 else ''})"
            for category, lines in sorted(unknown.items())
        )
        packs = " and ".join(p.name for p in policies)
        raise DatasetError(
            f"{path}: categories not defined in {packs}: {names}; use the pack's category ids "
            f"{sorted(known)} or add the category to the pack"
        )


class _LineError(Exception):
    pass


def _parse_line(number: int, raw: bytes) -> LabeledItem:
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _LineError(f"not valid JSON ({exc}); {_FORMAT}") from exc
    if not isinstance(data, dict):
        raise _LineError(f"a JSON {type(data).__name__}, not an object; {_FORMAT}")
    missing, extra = _KEYS - data.keys(), data.keys() - _KEYS
    if missing or extra:
        parts = [f"missing {sorted(missing)}"] if missing else []
        parts += [f"unknown {sorted(extra)}"] if extra else []
        raise _LineError(f"{' and '.join(parts)} keys; {_FORMAT}")
    content_type = data["content_type"]
    if content_type not in ("listing", "video"):
        raise _LineError(f'content_type {content_type!r} is neither "listing" nor "video"')
    labels = data["true_categories"]
    if not isinstance(labels, list) or not all(isinstance(c, str) and c for c in labels):
        raise _LineError(
            f"true_categories must be a list of category ids (strings), got {labels!r}; "
            "use [] for an item that violates nothing"
        )
    if len(set(labels)) != len(labels):
        raise _LineError(f"true_categories {labels} names a category twice; list each once")
    if not isinstance(data["event"], dict):
        raise _LineError(f"event must be a JSON object (a {content_type} event as published)")
    try:
        event = decode_event(content_type, orjson.dumps(data["event"]))
    except StreamprocError as exc:
        raise _LineError(
            f"event: {exc}; fix the event so that it matches the published {content_type} schema "
            f"(topics/schemas/)"
        ) from exc
    return LabeledItem(number, content_type, event, tuple(labels))


def _summary(path: Path, problems: list[str]) -> str:
    shown = problems[:_MAX_SHOWN]
    more = len(problems) - len(shown)
    tail = f"\n… and {more} more" if more else ""
    return f"{len(problems)} bad line(s) in dataset {path}:\n" + "\n".join(shown) + tail
