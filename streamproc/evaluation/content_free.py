"""Content-free items: inputs that say nothing, whose scores are a model's prior per category
(contextual calibration)."""

from __future__ import annotations

from datetime import UTC, datetime

from streamproc.evaluation.dataset import LabeledItem
from streamproc.schemas import ContentType, ListingEvent, VideoEvent

__all__ = ["CONTENT_FREE_TEXTS", "content_free_items"]

#: Content-free inputs (Zhao et al., "Calibrate Before Use", 2021): the model's score for a
#: category on these is its prior for that category, whatever the item says.
CONTENT_FREE_TEXTS = ("N/A", "[MASK]", "-", "none")


def content_free_items(content_type: ContentType) -> list[LabeledItem]:
    """Items that say nothing: every text field one of CONTENT_FREE_TEXTS."""
    created = datetime(2026, 1, 1, tzinfo=UTC)
    items: list[LabeledItem] = []
    for number, text in enumerate(CONTENT_FREE_TEXTS, start=1):
        if content_type == "listing":
            event: ListingEvent | VideoEvent = ListingEvent.model_validate(
                {"listing_id": f"content-free-{number}", "revision": 0, "seller_id": "content-free",
                 "title": text, "description": text, "price": {"amount": "10.00", "currency": "USD"},
                 "created_at": created}
            )  # fmt: skip
        else:
            event = VideoEvent.model_validate(
                {"video_id": f"content-free-{number}", "revision": 0, "creator_id": "content-free",
                 "caption": text, "transcript": text, "ocr_text": text, "duration_seconds": 10,
                 "created_at": created}
            )  # fmt: skip
        items.append(LabeledItem(number, content_type, event, ()))
    return items
