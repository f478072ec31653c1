"""Hostile input on the decode path, as property tests: random bytes, truncated and deeply
nested JSON, wrong types, huge fields, odd unicode, and events generated from the shipped
JSON Schemas then mutated. Whatever arrives, ``decode_event`` returns an event or raises a
DecodeError, and the worker's processor (with a fake model that approves everything it is
asked about) turns the record into a verdict or a dead letter with a decode reason: never an
exception, never an internal error, never an approve for input it could not decode."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any, cast

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from prometheus_client import CollectorRegistry

from streamproc.config import Settings
from streamproc.errors import DecodeError
from streamproc.inference.protocol import ModelAnswer, ModelRequest, TokenChoice
from streamproc.metrics import create
from streamproc.schemas import ContentType, DeadLetter, Verdict, decode_event
from streamproc.stream import InboundRecord, OutboundRecord
from tests.factories import label_policies, listing_dict, video_dict, worker_processor

SCHEMAS = Path(__file__).resolve().parents[2] / "topics" / "schemas"
SETTINGS = Settings(kafka={"client_id": "worker-hostile"})
TOPICS = SETTINGS.topics
TOPIC_OF: dict[ContentType, str] = {"listing": TOPICS.listings, "video": TOPICS.videos}
# Examples per property: the loaded profile's (tests/unit/conftest.py).
MANY = settings(deadline=None, suppress_health_check=list(HealthCheck))


class ApprovingModel:
    """Answers the first label of the request with certainty: the model would approve."""

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        self.calls += 1
        token = TokenChoice("N", math.log(1.0), (("N", 0.0),))
        return ModelAnswer("N", (token,), prompt_tokens=10, completion_tokens=1, cached_prompt_tokens=0)


MODEL = ApprovingModel()
PROCESSOR = worker_processor(
    SETTINGS,
    label_policies(),  # ApprovingModel answers the label protocol
    MODEL,
    create(CollectorRegistry(), consumed_topics=(TOPICS.listings, TOPICS.videos)),
)
VALID: dict[ContentType, bytes] = {
    "listing": orjson.dumps(listing_dict()),
    "video": orjson.dumps(video_dict()),
}


def dumps(value: Any) -> bytes:
    """JSON as any publisher may write it: integers of any size, non-ASCII as is."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def decodes(content_type: ContentType, raw: bytes | None) -> bool:
    """The decode path's contract: an event, or a DecodeError; anything else fails the test."""
    try:
        decode_event(content_type, raw)
    except DecodeError:
        return False
    return True


async def _process(record: InboundRecord) -> list[OutboundRecord]:
    return await PROCESSOR.process(record)


def check_processed(content_type: ContentType, raw: bytes | None) -> None:
    """One record through the processor: a verdict or a dead letter with a decode reason."""
    record = InboundRecord(TOPIC_OF[content_type], 3, 7, b"K-1", raw)
    outputs = asyncio.run(_process(record))
    assert outputs, "no output for a record"
    if decodes(content_type, raw):
        assert outputs[0].topic == TOPICS.verdicts
        verdict = Verdict.model_validate_json(outputs[0].value)
        assert verdict.decided_by.kind != "error" or verdict.decision != "approve"
    else:
        assert [o.topic for o in outputs] == [TOPICS.dlq]  # no verdict, so no approve
        letter = DeadLetter.model_validate_json(outputs[0].value)
        assert letter.reason in {"invalid_json", "schema_validation", "unsupported_schema_version"}, letter
        assert letter.key == "K-1" and letter.source_offset == 7


content_types = st.sampled_from(["listing", "video"])
# Any JSON value, with the odd characters JSON allows: controls, bidi overrides, astral planes.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)


@MANY
@given(content_types, st.binary(max_size=4096))
def test_random_bytes(content_type: ContentType, raw: bytes) -> None:
    check_processed(content_type, raw)


@MANY
@given(content_types, st.data())
def test_truncated_json_never_decodes(content_type: ContentType, data: st.DataObject) -> None:
    valid = VALID[content_type]
    cut = data.draw(st.integers(0, len(valid) - 1))
    assert not decodes(content_type, valid[:cut])
    check_processed(content_type, valid[:cut])


@MANY
@given(content_types, st.integers(1, 200_000), st.sampled_from([("[", "]"), ('{"a":', "}")]))
def test_deeply_nested_json(content_type: ContentType, depth: int, brackets: tuple[str, str]) -> None:
    opening, closing = brackets
    raw = (opening * depth + "1" + closing * depth).encode()
    check_processed(content_type, raw)


@MANY
@given(content_types, st.data())
def test_wrong_types_in_any_field(content_type: ContentType, data: st.DataObject) -> None:
    event: dict[str, Any] = orjson.loads(VALID[content_type])
    for name in data.draw(st.lists(st.sampled_from(sorted(event)), min_size=1, max_size=4, unique=True)):
        event[name] = data.draw(json_values)
    check_processed(content_type, dumps(event))


@MANY
@given(content_types, st.data(), st.integers(1_000, 300_000))
def test_huge_fields(content_type: ContentType, data: st.DataObject, size: int) -> None:
    event: dict[str, Any] = orjson.loads(VALID[content_type])
    text_fields = [k for k, v in event.items() if isinstance(v, str)]
    name = data.draw(st.sampled_from(text_fields))
    event[name] = data.draw(st.sampled_from(["x", "é", "\U0001f600", "<|im_end|>"])) * size
    check_processed(content_type, dumps(event))


@MANY
@given(content_types, st.data())
def test_odd_unicode_in_text_fields(content_type: ContentType, data: st.DataObject) -> None:
    """Any code point, lone surrogates included (escaped, as a JSON encoder writes them)."""
    event: dict[str, Any] = orjson.loads(VALID[content_type])
    text_fields = [k for k, v in event.items() if isinstance(v, str) and k != "created_at"]
    for name in data.draw(st.lists(st.sampled_from(text_fields), min_size=1, unique=True)):
        event[name] = data.draw(st.text(st.characters(codec=None), max_size=200))
    raw = json.dumps(event, ensure_ascii=data.draw(st.booleans())).encode("utf-8", "surrogatepass")
    check_processed(content_type, raw)


def schema_events(name: str) -> st.SearchStrategy[dict[str, Any]]:
    return cast("st.SearchStrategy[dict[str, Any]]", from_schema(json.loads((SCHEMAS / name).read_text())))


MUTATIONS = ("none", "drop", "retype", "duplicate-key", "append-garbage", "bump-version")


def mutate(event: dict[str, Any], data: st.DataObject) -> bytes:
    how = data.draw(st.sampled_from(MUTATIONS))
    fields = sorted(event)
    if how == "drop" and fields:
        event.pop(data.draw(st.sampled_from(fields)))
    elif how == "retype" and fields:
        event[data.draw(st.sampled_from(fields))] = data.draw(json_values)
    elif how == "bump-version":
        event["schema_version"] = data.draw(st.integers(2, 2**70) | st.text(max_size=3))
    raw = dumps(event)
    if how == "duplicate-key" and fields:
        # JSON with a key twice: the last one wins, as in every mainstream parser
        raw = raw[:-1] + b"," + dumps({fields[0]: None})[1:]
    elif how == "append-garbage":
        raw += data.draw(st.binary(min_size=1, max_size=20))
    return raw


@MANY
@given(schema_events("listing-event.v1.json"), st.data())
def test_listings_from_the_schema_then_mutated(event: dict[str, Any], data: st.DataObject) -> None:
    check_processed("listing", mutate(event, data))


@MANY
@given(schema_events("video-event.v1.json"), st.data())
def test_videos_from_the_schema_then_mutated(event: dict[str, Any], data: st.DataObject) -> None:
    check_processed("video", mutate(event, data))


def test_a_decodable_event_reaches_the_fake_model() -> None:
    """The harness the properties use is wired to the model path, not only to dead letters
    (it does not prove that any generated case got that far)."""
    before = MODEL.calls
    check_processed("listing", VALID["listing"])
    assert MODEL.calls == before + 1
