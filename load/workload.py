"""A realistic event mix: listings and videos whose text sizes follow log-normal distributions.

Most items are clean; a small share carries the signals the shipped packs' rules and
categories look for, so both the rule path and the model path are exercised.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from streamproc.config import TopicSettings

__all__ = ["Event", "WorkloadMix", "arrival_offsets", "make_events", "topic_of"]

_WORDS = tuple(
    [
        "vintage",
        "handmade",
        "ceramic",
        "mug",
        "oak",
        "table",
        "lamp",
        "leather",
        "wallet",
        "wireless",
        "headphones",
        "running",
        "shoes",
        "stainless",
        "bottle",
        "linen",
        "shirt",
        "wool",
        "scarf",
        "garden",
        "chair",
        "bicycle",
        "helmet",
        "camera",
        "lens",
        "phone",
        "case",
        "board",
        "game",
        "puzzle",
        "kettle",
        "blender",
        "notebook",
        "backpack",
        "watch",
        "strap",
        "sofa",
        "cushion",
        "rug",
        "mirror",
    ]
)
_CATEGORIES = (
    ["Home", "Kitchen"],
    ["Fashion", "Men", "Shirts"],
    ["Electronics", "Audio"],
    ["Sports", "Cycling"],
    ["Toys", "Games"],
    ["Garden", "Furniture"],
)
_RISKY_LISTING = (
    "Contact me on WhatsApp +44 7700 900123 for a better price, pay outside the app.",
    "Replica designer handbag, looks exactly like the original, AAA quality.",
    "Prescription painkillers, no prescription needed, discreet shipping.",
)
_RISKY_VIDEO = (
    "Try the blackout challenge, hold your breath until you pass out!",
    "Send me gift card codes and I will double your money.",
)


@dataclass(frozen=True, slots=True)
class Event:
    content_type: str  # "listing" or "video"
    key: bytes
    value: bytes


@dataclass(frozen=True)
class WorkloadMix:
    """Shares and sizes of the generated traffic."""

    video_share: float = 0.3
    risky_share: float = 0.05
    #: Median words of a listing description / a video transcript (log-normal, sigma 0.8).
    description_words: int = 40
    transcript_words: int = 80


def _text(rng: random.Random, median_words: int) -> str:
    count = max(1, min(2000, int(rng.lognormvariate(0, 0.8) * median_words)))
    return " ".join(rng.choice(_WORDS) for _ in range(count))


def _listing(rng: random.Random, n: int, mix: WorkloadMix, run: str) -> dict[str, Any]:
    description = _text(rng, mix.description_words)
    if rng.random() < mix.risky_share:
        description += " " + rng.choice(_RISKY_LISTING)
    return {
        "schema_version": 1,
        "listing_id": f"L-{run}-{n}",
        "revision": 0,
        "seller_id": f"S-{rng.randrange(5000)}",
        "title": _text(rng, 6)[:140],
        "description": description,
        "category_path": list(rng.choice(_CATEGORIES)),
        "price": {"amount": f"{rng.lognormvariate(3.5, 1.0):.2f}", "currency": "EUR"},
        "image_urls": [f"https://img.example.com/{run}/{n}/{i}.jpg" for i in range(rng.randint(1, 5))],
        "attributes": {"condition": rng.choice(["new", "used", "refurbished"])},
        "locale": "en-GB",
        "created_at": datetime.now(UTC).isoformat(),
    }


def _video(rng: random.Random, n: int, mix: WorkloadMix, run: str) -> dict[str, Any]:
    transcript = _text(rng, mix.transcript_words)
    if rng.random() < mix.risky_share:
        transcript += " " + rng.choice(_RISKY_VIDEO)
    duration = max(3, min(600, int(rng.lognormvariate(3.4, 0.7))))
    return {
        "schema_version": 1,
        "video_id": f"V-{run}-{n}",
        "revision": 0,
        "creator_id": f"C-{rng.randrange(5000)}",
        "caption": _text(rng, 8)[:300],
        "transcript": transcript,
        "ocr_text": _text(rng, 3),
        "keyframes": [
            {"url": f"https://frames.example.com/{run}/{n}/{i}.jpg", "timestamp_seconds": i * 5}
            for i in range(min(4, duration // 5 + 1))
        ],
        "duration_seconds": duration,
        "linked_product_ids": [],
        "locale": "en-GB",
        "created_at": datetime.now(UTC).isoformat(),
    }


def make_events(count: int, *, seed: int = 1, mix: WorkloadMix | None = None, run: str = "r") -> list[Event]:
    """``count`` events with unique ids (``run`` keeps ids of separate runs apart)."""
    rng, mix = random.Random(seed), mix or WorkloadMix()  # noqa: S311 - load data, not secrets
    events = []
    for n in range(count):
        if rng.random() < mix.video_share:
            data, content_type = _video(rng, n, mix, run), "video"
        else:
            data, content_type = _listing(rng, n, mix, run), "listing"
        key = str(data.get("listing_id") or data["video_id"]).encode()
        events.append(Event(content_type, key, orjson.dumps(data)))
    return events


def arrival_offsets(count: int, rate: float, rng: random.Random) -> list[float]:
    """Send times (seconds from start) of a Poisson process with ``rate`` events per second."""
    offsets, t = [], 0.0
    for _ in range(count):
        t += rng.expovariate(rate)
        offsets.append(t)
    return offsets


def topic_of(topics: TopicSettings, event: Event) -> str:
    return topics.listings if event.content_type == "listing" else topics.videos
