"""Wire models: the contract with upstream publishers and enforcement consumers."""

from streamproc.schemas.codec import EVENT_MODELS, decode_event, encode
from streamproc.schemas.common import ContentType
from streamproc.schemas.dead_letter import DeadLetter, DeadLetterReason
from streamproc.schemas.listing import ListingEvent, Price
from streamproc.schemas.verdict import (
    DecidedBy,
    Decision,
    Latencies,
    SourceRef,
    TokenUsage,
    Verdict,
)
from streamproc.schemas.video import Keyframe, VideoEvent

__all__ = [
    "EVENT_MODELS",
    "ContentEvent",
    "ContentType",
    "DeadLetter",
    "DeadLetterReason",
    "DecidedBy",
    "Decision",
    "Keyframe",
    "Latencies",
    "ListingEvent",
    "Price",
    "SourceRef",
    "TokenUsage",
    "Verdict",
    "VideoEvent",
    "decode_event",
    "encode",
]

ContentEvent = ListingEvent | VideoEvent
