from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from pydantic import ValidationError

from streamproc.errors import InvalidJson, SchemaValidationError, UnsupportedSchemaVersion
from streamproc.schemas import (
    ListingEvent,
    Verdict,
    VideoEvent,
    decode_event,
    decode_record,
    encode,
)
from streamproc.schemas.export import check_schemas, render_schemas
from tests.factories import decided_verdict, default_policy, listing, listing_dict, video, video_dict

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


def test_events_say_what_they_are() -> None:
    item = listing(listing_id="L-9", seller_id="S-9")
    clip = video(video_id="V-9", creator_id="C-9")
    assert (item.content_type, item.content_id, item.owner_id) == ("listing", "L-9", "S-9")
    assert (clip.content_type, clip.content_id, clip.owner_id) == ("video", "V-9", "C-9")
    # Properties, not wire fields: publishers write and the worker reads what it always did.
    assert not {"content_type", "content_id", "owner_id"} & (
        item.model_dump().keys() | clip.model_dump().keys()
    )
    for name in ("listing-event.v1.json", "video-event.v1.json"):
        schema = json.loads((SCHEMAS / name).read_text())
        assert not {"content_type", "content_id", "owner_id"} & schema["properties"].keys()


NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
HUMAN = {
    "source": "review",
    "labeler_id": "reviewer-1",
    "label_id": "lab-1",
    "original_decision": "review",
    "original_idempotency_key": "k",
    "overturned": False,
}
APPEAL = {"appeal_id": "ap-1", "original_decision": "reject", "original_idempotency_key": "k", "stands": None}
KINDS: dict[str, dict[str, Any]] = {
    "automated": {},
    "shadow": {"mode": "shadow"},
    "final": {"decided_by": {"kind": "human", "id": "reviewer-1"}, "human": HUMAN},
    "appeal": {"appeal": APPEAL},
}


def verdict_json(**overrides: Any) -> dict[str, Any]:
    """An automated live verdict as JSON, as written before verdicts had a kind."""
    data: dict[str, Any] = orjson.loads(encode(decided_verdict(default_policy("listing"), {}, now=NOW)))
    del data["kind"]
    return data | overrides


@pytest.mark.parametrize(("kind", "fields"), KINDS.items())
def test_a_verdict_without_kind_gets_the_kind_its_fields_imply(kind: str, fields: dict[str, Any]) -> None:
    old = orjson.dumps(verdict_json(**fields))
    verdict = decode_record(Verdict, old, "verdict")
    assert verdict.kind == kind
    assert orjson.loads(encode(verdict))["kind"] == kind  # always written now
    assert decode_record(Verdict, encode(verdict), "verdict") == verdict


def test_the_worker_says_automated_or_shadow() -> None:
    live = decided_verdict(default_policy("listing"), {}, now=NOW)
    shadow = decided_verdict(default_policy("listing"), {}, now=NOW, mode="shadow")
    assert (live.mode, live.kind, shadow.mode, shadow.kind) == ("live", "automated", "shadow", "shadow")


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("automated", KINDS["shadow"]),
        ("shadow", {}),
        ("final", {}),
        ("final", {**KINDS["final"], "mode": "shadow"}),
        ("appeal", KINDS["final"]),
        ("automated", KINDS["appeal"]),
        ("appeal", {**KINDS["appeal"], "decided_by": {"kind": "human", "id": "reviewer-1"}}),
    ],
)
def test_a_kind_that_contradicts_the_verdict_is_rejected(kind: str, fields: dict[str, Any]) -> None:
    with pytest.raises(SchemaValidationError, match=f"kind {kind} needs"):
        decode_record(Verdict, orjson.dumps(verdict_json(kind=kind, **fields)), "verdict")
    with pytest.raises(ValidationError):
        Verdict.model_validate(verdict_json(kind=kind, **fields))
