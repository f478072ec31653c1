"""Text an item chose never forges a log line nor swells one: field names with newlines,
megabyte values and thousands of bad fields reach warnings and dead letters escaped and
bounded, and text logs escape control characters in every message."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from streamproc.config import Settings
from streamproc.errors import safe_text
from streamproc.inference.protocol import ModelAnswer, ModelRequest
from streamproc.metrics import create
from streamproc.schemas import DeadLetter
from streamproc.stream import InboundRecord, OutboundRecord, host
from streamproc.worker import Processor
from tests.factories import label_policies, listing_dict, worker_processor

SETTINGS = Settings(kafka={"client_id": "worker-untrusted-text"})
TOPICS = SETTINGS.topics
FORGED = "a\nFAKE LOG LINE"


class UncalledModel:
    """Undecodable input never reaches the model."""

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        raise AssertionError("the model was asked about an undecodable record")


async def _process(processor: Processor, record: InboundRecord) -> list[OutboundRecord]:
    return await processor.process(record)


def _dead_letter(raw: bytes, caplog: pytest.LogCaptureFixture) -> tuple[str, DeadLetter]:
    """The warning logged for ``raw`` and the dead letter published for it."""
    processor = worker_processor(
        SETTINGS,
        label_policies(),
        UncalledModel(),
        create(CollectorRegistry(), consumed_topics=(TOPICS.listings, TOPICS.videos)),
    )
    record = InboundRecord(TOPICS.listings, 0, 9, b"L-1", raw)
    with caplog.at_level(logging.WARNING, logger="streamproc.stream.dead_letter"):
        (out,) = asyncio.run(_process(processor, record))
    assert out.topic == TOPICS.dlq
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "streamproc.stream.dead_letter"]
    return warning, DeadLetter.model_validate_json(out.value)


def test_an_attribute_key_with_a_newline_stays_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    warning, letter = _dead_letter(orjson.dumps(listing_dict(attributes={FORGED: 5})), caplog)
    for text in (warning, letter.error_message):
        assert "\n" not in text and "a\\nFAKE LOG LINE" in text, text
    assert letter.reason == "schema_validation"


@pytest.mark.parametrize(
    "event",
    [
        listing_dict(attributes={"k" * 1_000_000: 5}),  # a megabyte field name
        listing_dict(schema_version="v\n" * 500_000),  # quoted by the version check
        listing_dict(attributes={f"k{i}": i for i in range(50_000)}),  # one problem each
    ],
    ids=["huge-key", "huge-version", "many-bad-fields"],
)
def test_a_megabyte_of_bad_input_gives_a_bounded_message(
    event: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    raw = orjson.dumps(event)
    assert len(raw) > 500_000
    warning, letter = _dead_letter(raw, caplog)
    for text in (warning, letter.error_message):
        assert len(text) < 2_500 and "\n" not in text, len(text)
        assert "more characters)" in text or "and 49990 more" in text


def test_safe_text_escapes_what_would_break_a_line_and_counts_what_it_leaves_out() -> None:
    hostile = "a\r\nb\x1b[31mc\u2028d\u202ee\x85f\ud800"
    assert safe_text(hostile) == "a\\r\\nb\\x1b[31mc\\u2028d\\u202ee\\x85f\\ud800"
    assert safe_text("Crème brûlée 🍮 «ok»") == "Crème brûlée 🍮 «ok»"  # printable text as is
    assert safe_text("x" * 250) == "x" * 200 + "… (50 more characters)"
    assert safe_text("\n" * 10, limit=3) == "\\n\\n\\n… (7 more characters)"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_every_log_message_is_one_line_whoever_logs_it(root_logging: io.StringIO, log_format: Any) -> None:
    """Rule errors, server answers: messages the project does not word itself."""
    host.configure_logging("info", log_format)
    for handler in logging.getLogger().handlers:
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(root_logging)
    quoted = f"{FORGED}\r\n[2024-01-01] CRITICAL fake\x1b[2J\u2029end"
    logging.getLogger("streamproc.test").warning("rule r1 failed on an item: %s", quoted)
    (line,) = root_logging.getvalue().splitlines()  # splitlines also splits at \x1c-\x1e, \x85, \u2028
    if log_format == "text":
        assert line.endswith(
            "WARNING streamproc.test: rule r1 failed on an item: "
            "a\\nFAKE LOG LINE\\r\\n[2024-01-01] CRITICAL fake\\x1b[2J\\u2029end"
        )
    else:  # JSON escapes it instead
        assert json.loads(line)["message"] == f"rule r1 failed on an item: {quoted}"
