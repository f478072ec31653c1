"""Wire models: the contract with upstream publishers and enforcement consumers."""

from streamproc.schemas.appeal import AppealEvent
from streamproc.schemas.audit import AuditSample
from streamproc.schemas.codec import EVENT_MODELS, decode_event, decode_record, encode
from streamproc.schemas.common import ContentType
from streamproc.schemas.dead_letter import DeadLetter, DeadLetterReason
from streamproc.schemas.explanation import CategoryMargin, Explanation, RuleMatch, WindowSpan
from streamproc.schemas.label import LabelEvent
from streamproc.schemas.listing import ListingEvent, Price
from streamproc.schemas.verdict import (
    AppealOutcome,
    DecidedBy,
    Decision,
    HumanDecision,
    LabelSource,
    Latencies,
    ReviewTicket,
    SourceRef,
    TokenUsage,
    Verdict,
    VerdictKind,
    VerdictMode,
)
from streamproc.schemas.video import Keyframe, VideoEvent

__all__ = [
    "EVENT_MODELS",
    "AppealEvent",
    "AppealOutcome",
    "AuditSample",
    "CategoryMargin",
    "ContentEvent",
    "ContentType",
    "DeadLetter",
    "DeadLetterReason",
    "DecidedBy",
    "Decision",
    "Explanation",
    "HumanDecision",
    "Keyframe",
    "LabelEvent",
    "LabelSource",
    "Latencies",
    "ListingEvent",
    "Price",
    "ReviewTicket",
    "RuleMatch",
    "SourceRef",
    "TokenUsage",
    "Verdict",
    "VerdictKind",
    "VerdictMode",
    "VideoEvent",
    "WindowSpan",
    "decode_event",
    "decode_record",
    "encode",
]

ContentEvent = ListingEvent | VideoEvent
