from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from streamproc.errors import InvalidJson, SchemaValidationError, UnsupportedSchemaVersion
from streamproc.schemas import ListingEvent, VideoEvent, decode_event
from streamproc.schemas.export import check_schemas, render_schemas
from tests.factories import listing_dict, video_dict

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "topics" / "schemas"


def test_committed_json_schemas_match_the_models() -> None:
    assert check_schemas(SCHEMAS) == [], "run `streamproc schemas export` and commit the result"


def test_check_schemas_notices_a_changed_file(tmp_path: Path) -> None:
    for name, text in render_schemas().items():
        (tmp_path / name).write_text(text)
    (tmp_path / "verdict.v1.json").write_text("{}\n")
    assert check_schemas(tmp_path) == ["verdict.v1.json"]


@pytest.mark.parametrize(
    ("sample", "schema", "content_type"),
    [
        ("listings.jsonl", "listing-event.v1.json", "listing"),
        ("videos.jsonl", "video-event.v1.json", "video"),
    ],
)
def test_shipped_samples_follow_the_published_schema(sample: str, schema: str, content_type: str) -> None:
    validator = jsonschema.Draft202012Validator(json.loads((SCHEMAS / schema).read_text()))
    lines = (ROOT / "samples" / sample).read_bytes().splitlines()
    assert len(lines) >= 5
    for line in lines:
        validator.validate(orjson.loads(line))
        decode_event(content_type, line)  # type: ignore[arg-type]


def test_decode_listing_and_video() -> None:
    event = decode_event("listing", orjson.dumps(listing_dict(listing_id="L-9", revision=3)))
    assert isinstance(event, ListingEvent)
    assert (event.listing_id, event.revision, str(event.price.amount)) == ("L-9", 3, "12.50")
    assert isinstance(decode_event("video", orjson.dumps(video_dict())), VideoEvent)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    event = decode_event("listing", orjson.dumps(listing_dict(new_optional_field="x")))
    assert not hasattr(event, "new_optional_field")


@pytest.mark.parametrize(
    ("raw", "error", "fragment"),
    [
        (b"{not json", InvalidJson, "not valid JSON"),
        (b"[1, 2]", InvalidJson, "expected an object"),
        (None, InvalidJson, "tombstone"),
        (orjson.dumps(listing_dict(schema_version=2)), UnsupportedSchemaVersion, "schema_version 2"),
        (
            orjson.dumps(listing_dict(price={"amount": "-1", "currency": "EUR"})),
            SchemaValidationError,
            "price.amount",
        ),
        (orjson.dumps(listing_dict(created_at="2026-01-01T00:00:00")), SchemaValidationError, "created_at"),
        (
            orjson.dumps({k: v for k, v in listing_dict().items() if k != "title"}),
            SchemaValidationError,
            "title",
        ),
    ],
)
def test_decode_errors_name_the_problem(raw: bytes | None, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment.replace(".", r"\.")):
        decode_event("listing", raw)
