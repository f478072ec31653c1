"""Builders of valid events for tests: override only what a test is about."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streamproc.config import Settings
from streamproc.decision import ModelClient, Outcome, build_verdict, decide
from streamproc.metrics import WorkerRecorder
from streamproc.policy import Policy, PolicySet, load_policy_set
from streamproc.schemas import ContentType, ListingEvent, SourceRef, Verdict, VerdictMode, VideoEvent
from streamproc.worker import Processor


def listing_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": 1,
        "listing_id": "L-1",
        "revision": 0,
        "seller_id": "S-1",
        "title": "Handmade ceramic mug",
        "description": "Stoneware, dishwasher safe.",
        "category_path": ["Home", "Kitchen"],
        "price": {"amount": "12.50", "currency": "EUR"},
        "image_urls": ["https://img.example.com/1.jpg"],
        "attributes": {"colour": "blue"},
        "locale": "en-GB",
        "created_at": datetime.now(UTC).isoformat(),
    }
    data.update(overrides)
    return data


def video_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": 1,
        "video_id": "V-1",
        "revision": 0,
        "creator_id": "C-1",
        "caption": "Morning stretch",
        "transcript": "Reach up, breathe in.",
        "ocr_text": "DAY 1",
        "keyframes": [{"url": "https://frames.example.com/1/0.jpg", "timestamp_seconds": 0}],
        "duration_seconds": 30,
        "linked_product_ids": [],
        "locale": "en-US",
        "created_at": datetime.now(UTC).isoformat(),
    }
    data.update(overrides)
    return data


def listing(**overrides: Any) -> ListingEvent:
    return ListingEvent.model_validate(listing_dict(**overrides))


def video(**overrides: Any) -> VideoEvent:
    return VideoEvent.model_validate(video_dict(**overrides))


def decided_verdict(
    policy: Policy,
    scores: dict[str, float],
    *,
    now: datetime,
    outcome: Outcome | None = None,
    mode: VerdictMode = "live",
    **listing_overrides: Any,
) -> Verdict:
    """The verdict the worker builds for a listing under ``policy`` from these scores (or ``outcome``)."""
    return build_verdict(
        event=listing(**listing_overrides),
        policy=policy,
        outcome=outcome or decide(policy, scores),
        scores=scores,
        model="m",
        source=SourceRef(topic="t", partition=0, offset=1),
        usage=None,
        inference_seconds=None,
        processing_seconds=0.1,
        now=now,
        mode=mode,
    )


ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "policies"


def sample_events(name: str) -> list[dict[str, Any]]:
    """The events of one file under samples/, as dicts."""
    return [orjson.loads(line) for line in (ROOT / "samples" / name).read_bytes().splitlines()]


def shipped_policies() -> PolicySet:
    """The packs under policies/, as the worker loads them by default."""
    return load_policy_set([POLICIES])


def default_policy(content_type: ContentType) -> Policy:
    """The shipped default pack for a content type."""
    return next(p for p in shipped_policies().policies if p.content_type == content_type and not p.verticals)


def worker_processor(
    settings: Settings, policies: PolicySet, model: ModelClient, metrics: WorkerRecorder
) -> Processor:
    """A worker's processor wired from ``settings`` as the worker service wires it."""
    return Processor(
        settings.topics,
        settings.audit,
        policies,
        model,
        metrics,
        model_name=settings.inference.model,
        worker_id=settings.kafka.client_id,
    )
