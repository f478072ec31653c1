"""`streamproc smoke` (the chart's `helm test`): what it makes of each answer.

The round trip through a real broker and worker is in tests/integration/test_pipeline.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from streamproc.cli import cli
from streamproc.config import KafkaSettings, TopicSettings
from streamproc.schemas import decode_event
from streamproc.stream import smoke as smoke_module
from streamproc.stream.smoke import SMOKE_SELLER_ID, SmokeResult, smoke_listing

LISTING = "smoke-0123"


def run(monkeypatch: pytest.MonkeyPatch, result: SmokeResult) -> Any:
    seen: dict[str, Any] = {}

    async def fake(kafka: KafkaSettings, topics: TopicSettings, *, within: float) -> SmokeResult:
        seen.update(kafka=kafka, topics=topics, within=within)
        return result

    monkeypatch.setattr(smoke_module, "smoke_test", fake)
    env = {"STREAMPROC_KAFKA__BOOTSTRAP_SERVERS": "kafka:9093", "STREAMPROC_TOPICS__VERDICTS": "v.out"}
    done = CliRunner().invoke(cli, ["smoke", "--timeout", "30"], env=env, prog_name="streamproc")
    assert seen["kafka"].bootstrap_servers == "kafka:9093" and seen["topics"].verdicts == "v.out"
    assert seen["within"] == 30
    return done


def verdict(kind: str, decision: str, id_: str | None) -> dict[str, Any]:
    return {
        "content_id": LISTING,
        "decision": decision,
        "decided_by": {"kind": kind, "id": id_},
        "policy_version": "listings@3",
        "model": "m",
    }


def test_a_scored_verdict_passes_and_says_what_decided_it(monkeypatch: pytest.MonkeyPatch) -> None:
    done = run(monkeypatch, SmokeResult(LISTING, "verdict", 2.25, verdict("category", "approve", None)))
    assert done.exit_code == 0
    assert done.output == f"{LISTING}: approve after 2.2 s, decided by category (pack listings@3, model m)\n"


def test_a_fallback_verdict_fails_although_the_pipeline_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    done = run(monkeypatch, SmokeResult(LISTING, "verdict", 1.0, verdict("error", "review", "timeout")))
    assert done.exit_code == 1
    assert "got review through the fallback: the model server could not score it (timeout)" in done.output


def test_a_dead_letter_fails_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    done = run(monkeypatch, SmokeResult(LISTING, "dead_letter", 1.0, {"key": LISTING, "reason": "schema"}))
    assert done.exit_code == 1
    assert f"{LISTING} was dead-lettered: schema" in done.output


def test_no_answer_fails_naming_the_topics_to_look_at(monkeypatch: pytest.MonkeyPatch) -> None:
    done = run(monkeypatch, SmokeResult(LISTING, "timeout", 30.0))
    assert done.exit_code == 1
    assert f"no verdict for {LISTING} on v.out within 30 s" in done.output
    assert "workers consume content.listings.v1" in done.output


def test_the_smoke_listing_is_a_valid_event_with_a_new_id_each_time() -> None:
    first, second = smoke_listing(), smoke_listing()
    assert first.listing_id != second.listing_id and first.seller_id == SMOKE_SELLER_ID
    decoded = decode_event("listing", first.model_dump_json().encode())
    assert decoded.content_id == first.listing_id
