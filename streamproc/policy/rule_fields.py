"""The fields a rule's ``when`` reads: declared once here, with their types, the stages that
see them and what they hold. Compiling rules, building their context and the reference in
the docs (:func:`rule_fields_reference`) all read this table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import rule_engine  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "POST_RULE_FIELDS",
    "RULE_FIELDS",
    "RULE_FIELD_TABLE",
    "RuleField",
    "field_types",
    "rule_fields_reference",
]

Stage = Literal["pre", "post"]
_T = rule_engine.DataType
_EVERY: Final[tuple[Stage, ...]] = ("pre", "post")
_POST: Final[tuple[Stage, ...]] = ("post",)


@dataclass(frozen=True)
class RuleField:
    """One field of the rule context."""

    name: str
    #: The rule-engine type rules are type-checked against when the policy is compiled.
    type: Any
    #: The rule stages that see it: post rules also see what the model scored.
    stages: tuple[Stage, ...]
    #: One line, markdown.
    description: str
    #: May be ``null`` (a field that does not apply to the item, or has no value).
    nullable: bool = False


#: Every field, in the order the docs list them. A field that does not apply to the item is
#: empty (``""``, ``[]``, ``{}``, ``0``) or, for prices and durations, ``null``.
RULE_FIELD_TABLE: Final[tuple[RuleField, ...]] = (
    RuleField("content_type", _T.STRING, _EVERY, '`"listing"` or `"video"`'),
    RuleField("content_id", _T.STRING, _EVERY, "`listing_id` (listings) or `video_id` (videos)"),
    RuleField("revision", _T.FLOAT, _EVERY, "the item's revision; increases with every edit"),
    RuleField("owner_id", _T.STRING, _EVERY, "`seller_id` (listings) or `creator_id` (videos)"),
    RuleField("locale", _T.STRING, _EVERY, 'e.g. `"en-GB"`'),
    RuleField(
        "text",
        _T.STRING,
        _EVERY,
        "all text of the item joined by newlines, as the model reads it and folded for matching: "
        "title, category path, attributes (`key: value`) and description (listings); caption, "
        "transcript and OCR text (videos); NFKC-normalised, without zero-width characters or soft "
        "hyphens, lower-cased, and with look-alike letters (Cyrillic `а`, Greek `ο`) folded to Latin "  # noqa: RUF001 - the examples
        "ones; its first 100,000 characters",
    ),
    RuleField(
        "raw_text",
        _T.STRING,
        _EVERY,
        "the same texts joined by newlines exactly as the item wrote them (no normalisation, case kept)",
    ),
    RuleField(
        "clipped_fields",
        _T.ARRAY(_T.STRING),
        _EVERY,
        "the item's fields the model does not read in full: text past the pack's "
        "`max_text_windows`, or images withheld for their host (`media.allowed_hosts`); `[]` "
        "when it reads everything",
    ),
    RuleField("title", _T.STRING, _EVERY, 'the listing\'s title; `""` for videos'),
    RuleField("description", _T.STRING, _EVERY, 'the listing\'s description; `""` for videos'),
    RuleField(
        "category",
        _T.STRING,
        _EVERY,
        'the category path joined with `" > "`, e.g. `"Fashion > Watches"`; `""` for videos',
    ),
    RuleField(
        "category_path",
        _T.ARRAY(_T.STRING),
        _EVERY,
        "the category path as a list of strings, from the root down; `[]` for videos",
    ),
    RuleField("price", _T.FLOAT, _EVERY, "the listing's price; `null` for videos", nullable=True),
    RuleField("currency", _T.STRING, _EVERY, 'ISO 4217 code of the price; `""` for videos'),
    RuleField(
        "attributes",
        _T.MAPPING(_T.STRING, _T.STRING),
        _EVERY,
        "mapping of attribute name to string value; `{}` for videos",
    ),
    RuleField("image_count", _T.FLOAT, _EVERY, "number of image URLs; `0` for videos"),
    RuleField("caption", _T.STRING, _EVERY, 'the video\'s caption; `""` for listings'),
    RuleField(
        "transcript", _T.STRING, _EVERY, 'speech recognised in the video\'s audio (ASR); `""` for listings'
    ),
    RuleField(
        "ocr_text", _T.STRING, _EVERY, 'text recognised in the video\'s frames (OCR); `""` for listings'
    ),
    RuleField("duration_seconds", _T.FLOAT, _EVERY, "the video's length; `null` for listings", nullable=True),
    RuleField("keyframe_count", _T.FLOAT, _EVERY, "number of keyframes; `0` for listings"),
    RuleField(
        "linked_product_count", _T.FLOAT, _EVERY, "number of listings the video links to; `0` for listings"
    ),
    RuleField(
        "median_price",
        _T.FLOAT,
        _EVERY,
        "the policy's median price for the longest prefix of the category path that has one "
        '(`"Fashion > Watches > Luxury"` uses `"Fashion > Watches"` when only that is listed), '
        "else `null`",
        nullable=True,
    ),
    RuleField(
        "lists",
        _T.MAPPING(_T.STRING, _T.ARRAY(_T.STRING)),
        _EVERY,
        "the policy's named lists, mapping name to list of strings",
    ),
    RuleField(
        "owner_lists", _T.ARRAY(_T.STRING), _EVERY, "names of the policy's lists that contain `owner_id`"
    ),
    RuleField(
        "text_lists",
        _T.ARRAY(_T.STRING),
        _EVERY,
        "names of the policy's lists with an entry that occurs in `text` as whole words, ignoring "
        'case and punctuation (`"AAA grade"` is in `"aaa-grade, boxed"` but `"ass"` is not in '
        '`"class"`); an entry with no letters or digits, such as an emoji, counts when it occurs '
        "anywhere",
    ),
    RuleField("scores", _T.MAPPING(_T.STRING, _T.FLOAT), _POST, "mapping of category id to score in [0, 1]"),
    RuleField(
        "decision",
        _T.STRING,
        _POST,
        'the decision the thresholds gave: `"approve"`, `"review"` or `"reject"`',
    ),
    RuleField("max_score", _T.FLOAT, _POST, "the highest score, `0` when there are none"),
)

#: Fields every rule can use, in table order.
RULE_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in RULE_FIELD_TABLE if f.stages == _EVERY)
#: Fields only post rules can use.
POST_RULE_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in RULE_FIELD_TABLE if f.stages == _POST)


def field_types(stage: Stage) -> dict[str, Any]:
    """Field name → rule-engine type, for the fields a rule of ``stage`` sees."""
    return {f.name: f.type for f in RULE_FIELD_TABLE if stage in f.stages}


def rule_fields_reference() -> str:
    """The rule fields as a markdown table (field, type, stages, description), for the docs."""
    rows = ["| field | type | stages | description |", "|---|---|---|---|"]
    for field in RULE_FIELD_TABLE:
        kind = _type_name(field.type) + (" or null" if field.nullable else "")
        description = field.description.replace("|", "\\|")
        rows.append(f"| `{field.name}` | {kind} | {', '.join(field.stages)} | {description} |")
    return "\n".join(rows)


def _type_name(data_type: Any) -> str:
    if data_type.name == "ARRAY":
        return f"list of {_type_name(data_type.value_type)}s"
    if data_type.name == "MAPPING":
        return f"mapping of {_type_name(data_type.key_type)} to {_type_name(data_type.value_type)}"
    name: str = data_type.name
    return {"FLOAT": "number"}.get(name, name.lower())
