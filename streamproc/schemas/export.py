"""JSON Schemas generated from the wire models, as committed under topics/schemas/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel

from streamproc.schemas.appeal import AppealEvent
from streamproc.schemas.audit import AuditSample
from streamproc.schemas.dead_letter import DeadLetter
from streamproc.schemas.label import LabelEvent
from streamproc.schemas.listing import ListingEvent
from streamproc.schemas.verdict import Verdict
from streamproc.schemas.video import VideoEvent

__all__ = ["SCHEMA_FILES", "check_schemas", "render_schemas", "write_schemas"]

# file name → (model, mode): inbound events are described as publishers must write them
# (validation), outbound records as consumers will read them (serialization).
SCHEMA_FILES: Final[dict[str, tuple[type[BaseModel], Literal["validation", "serialization"]]]] = {
    "listing-event.v1.json": (ListingEvent, "validation"),
    "video-event.v1.json": (VideoEvent, "validation"),
    "verdict.v1.json": (Verdict, "serialization"),
    "dead-letter.v1.json": (DeadLetter, "serialization"),
    "label-event.v1.json": (LabelEvent, "validation"),
    "audit-sample.v1.json": (AuditSample, "serialization"),
    "appeal-event.v1.json": (AppealEvent, "validation"),
}


def render_schemas() -> dict[str, str]:
    """File name → schema text, deterministic byte for byte."""
    rendered = {}
    for name, (model, mode) in SCHEMA_FILES.items():
        schema: dict[str, Any] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"streamproc/{name}",
            **model.model_json_schema(mode=mode),
        }
        rendered[name] = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return rendered


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def check_schemas(directory: Path) -> list[str]:
    """Names of files that are missing or differ from the generated schemas."""
    return [
        name
        for name, text in render_schemas().items()
        if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != text
    ]
