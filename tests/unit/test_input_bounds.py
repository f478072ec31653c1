"""Every input a publisher controls is bounded: each string, list and map of the inbound schemas
has a maximum length (checked over their JSON schemas), and the prompt stays within a size
fixed by those bounds whatever the text (NFKC lengthens some characters 18-fold)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from streamproc.policy import item_content
from streamproc.schemas import AppealEvent, LabelEvent, ListingEvent, VideoEvent
from tests.factories import default_policy, listing, video

INBOUND = [ListingEvent, VideoEvent, LabelEvent, AppealEvent]


def _unbounded(schema: dict[str, Any], defs: dict[str, Any], where: str) -> Iterator[str]:
    """Paths of strings, arrays and maps without a maximum length (enums and formats aside)."""
    if "$ref" in schema:
        yield from _unbounded(defs[schema["$ref"].split("/")[-1]], defs, where)
        return
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            yield from _unbounded(option, defs, where)
    kind = schema.get("type")
    if kind == "string" and not ({"maxLength", "enum", "const", "format"} & schema.keys() or _fixed(schema)):
        yield where
    if kind == "array":
        if "maxItems" not in schema:
            yield where
        yield from _unbounded(schema.get("items", {}), defs, f"{where}[]")
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            if "maxProperties" not in schema:
                yield where
            yield from _unbounded(schema.get("propertyNames", {"type": "string"}), defs, f"{where}{{key}}")
            yield from _unbounded(extra, defs, f"{where}{{value}}")
        for name, field in schema.get("properties", {}).items():
            yield from _unbounded(field, defs, f"{where}.{name}")


def _fixed(schema: dict[str, Any]) -> bool:
    """An anchored pattern without open-ended repetition (``^[A-Z]{3}$``)."""
    pattern = schema.get("pattern", "")
    return pattern.startswith("^") and pattern.endswith("$") and not re.search(r"[*+]|\{\d+,\}", pattern)


#: A price's amount: a JSON number or a numeric string, held to 14 digits by its Decimal type.
NUMERIC_TEXT = {"ListingEvent.price.amount"}


@pytest.mark.parametrize("model", INBOUND, ids=lambda m: m.__name__)
def test_every_string_list_and_map_of_an_input_schema_is_bounded(model: Any) -> None:
    schema = model.model_json_schema()
    assert set(_unbounded(schema, schema.get("$defs", {}), model.__name__)) - NUMERIC_TEXT == set()


LONG = "\ufdfa" * 20_000  # 18 characters each after NFKC


@pytest.mark.parametrize(
    "event",
    [
        listing(title=LONG[:500], description=LONG, category_path=[LONG[:200]] * 10,
                attributes={f"{n:03d}" + LONG[:196]: LONG[:2_000] for n in range(100)}),
        video(caption=LONG[:5_000], transcript=LONG + LONG, ocr_text=LONG),
    ],
    ids=["listing", "video"],
)  # fmt: skip
def test_the_prompt_stays_small_whatever_the_fields_hold(event: Any) -> None:
    content = item_content(default_policy(event.content_type), event)
    assert len(content.text) < 20_000  # every field at its bound, each character expanding 18-fold
