"""Records of about a megabyte in one field, and records with one field at its schema bound.

Each publisher-controlled text field in turn (title, description, an attribute value, an
attribute key, a category path element, caption, transcript, OCR text) holds either plain
text or U+FDFA, one character that NFKC turns into 18: before the input bounds, one such
record in ``category_path`` became a 72 MB model request. A record of about 1 MB is over
every bound (a dead letter at decode); a record at the bound is the largest the schema
accepts, so it goes all the way through the prompt path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import orjson

from tests.factories import listing_dict, video_dict

__all__ = ["BOUNDS", "FIELDS", "MEGABYTE", "LargeRecord", "large_record", "large_records"]

MEGABYTE = 1_000_000
#: One character, three bytes of UTF-8, 18 characters after NFKC.
LIGATURE = "\ufdfa"
PLAIN = "Solid oak, hand finished, ships flat packed. "

Field = Literal[
    "title",
    "description",
    "attribute_value",
    "attribute_key",
    "category_path",
    "caption",
    "transcript",
    "ocr_text",
]
FIELDS: tuple[Field, ...] = get_args(Field)
#: The schema's maximum length of each field (streamproc/schemas/listing.py and video.py).
BOUNDS: dict[Field, int] = {
    "title": 500,
    "description": 20_000,
    "attribute_value": 2_000,
    "attribute_key": 200,
    "category_path": 200,
    "caption": 5_000,
    "transcript": 50_000,
    "ocr_text": 20_000,
}
#: Entries of the field's list or map at its bound: 100 attributes, 10 category path elements.
_ENTRIES = {"attribute_value": 100, "attribute_key": 100, "category_path": 10}
_VIDEO_FIELDS = {"caption", "transcript", "ocr_text"}


@dataclass(frozen=True)
class LargeRecord:
    content_id: str
    content_type: Literal["listing", "video"]
    field: Field
    text: Literal["ligature", "plain"]
    oversize: bool  # about 1 MB in the field: over its bound
    value: bytes


def _text(kind: Literal["ligature", "plain"], chars: int) -> str:
    unit = LIGATURE if kind == "ligature" else PLAIN
    return (unit * (chars // len(unit) + 1))[:chars]


def _fill(field: Field, make: Callable[[int], str], chars: int, entries: int) -> dict[str, Any]:
    """The event fields that put ``chars`` characters in each of ``entries`` entries of ``field``."""
    if field == "attribute_value":
        return {"attributes": {f"a{n:03d}": make(chars) for n in range(entries)}}
    if field == "attribute_key":
        return {"attributes": {f"{n:03d}{make(chars - 3)}": "x" for n in range(entries)}}
    if field == "category_path":
        return {"category_path": [make(chars)] * entries}
    return {field: make(chars)}


def large_record(
    index: int, field: Field, kind: Literal["ligature", "plain"], *, oversize: bool
) -> LargeRecord:
    """One record: about :data:`MEGABYTE` of UTF-8 in one entry of ``field``, or every entry of
    ``field`` at its bound."""
    width = len(LIGATURE.encode()) if kind == "ligature" else 1
    chars = MEGABYTE // width if oversize else BOUNDS[field]
    entries = 1 if oversize else _ENTRIES.get(field, 1)
    fields = _fill(field, lambda n: _text(kind, n), chars, entries)
    content_type: Literal["listing", "video"] = "video" if field in _VIDEO_FIELDS else "listing"
    content_id = f"{content_type[0].upper()}-{index:03d}"
    if content_type == "video":
        event = video_dict(video_id=content_id, **fields)
    else:
        event = listing_dict(listing_id=content_id, **fields)
    return LargeRecord(content_id, content_type, field, kind, oversize, orjson.dumps(event))


def large_records(count: int) -> list[LargeRecord]:
    """``count`` records, the field turning first, then (per round of fields) 1 MB of U+FDFA,
    1 MB of plain text, U+FDFA at the bound, plain text at the bound."""
    variants: list[tuple[Literal["ligature", "plain"], bool]] = [
        ("ligature", True),
        ("plain", True),
        ("ligature", False),
        ("plain", False),
    ]
    records = []
    for index in range(count):
        kind, oversize = variants[index // len(FIELDS) % len(variants)]
        records.append(large_record(index, FIELDS[index % len(FIELDS)], kind, oversize=oversize))
    return records
