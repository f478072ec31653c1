"""Builders of valid events for tests: override only what a test is about."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
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


def shipped_pack_files() -> list[Path]:
    """The shipped packs' files: each pack and the probe heads it names."""
    return sorted([*POLICIES.glob("*.yaml"), *POLICIES.glob("*.heads.json")])


def copy_shipped_packs(into: Path) -> Path:
    """A writable copy of the shipped packs (with their heads) in ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    for path in shipped_pack_files():
        shutil.copy(path, into / path.name)
    return into


def shipped_policies() -> PolicySet:
    """The packs under policies/, as the worker loads them by default."""
    return load_policy_set([POLICIES])


def default_policy(content_type: ContentType) -> Policy:
    """The shipped default pack for a content type."""
    return next(p for p in shipped_policies().policies if p.content_type == content_type and not p.verticals)


def label_policies() -> PolicySet:
    """The shipped packs (texts, labels, thresholds) scored with ``label_logprob`` instead.

    For tests of plumbing and decision logic whose fake model speaks the label protocol (one
    letter with its top log-probabilities, one request per item): the shipped packs use the
    ``embedding_probe`` scorer, whose requests such a fake cannot answer. Tests that depend on
    particular thresholds set them with ``Policy.with_thresholds``.
    """
    shipped = shipped_policies()
    packs = (*shipped.policies, *shipped.shadow_policies)
    return PolicySet([dataclasses.replace(p, scorer="label_logprob", heads=None, probe=None) for p in packs])


def label_pack(pack: Path, directory: Path) -> Path:
    """The pack file ``pack`` written into ``directory`` with ``scorer: label_logprob``: the
    file form of :func:`label_policies`, for commands that read packs from files (eval,
    calibrate) driven by a fake model that speaks the label protocol. Lines keep their numbers.
    """
    text, found = re.subn(r"^scorer: \w+$", "scorer: label_logprob", pack.read_text(), flags=re.MULTILINE)
    assert found == 1, f"{pack} has no top-level scorer line to replace"
    text = re.sub(
        r"^heads: \{.*\}$", "# heads: for the embedding_probe scorer only", text, flags=re.MULTILINE
    )
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / pack.name
    out.write_text(text)
    return out


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


def group_gone(pgid: int, within: float) -> bool:
    """Whether every process of the group ``pgid`` has exited within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False
