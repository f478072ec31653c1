"""The Kafka runtime shared by the worker and the quality service: records, the in-flight
pipeline with safe commits and backpressure, and dead-lettering."""

from streamproc.stream.dead_letter import dead_letter, dead_lettering, too_large_letters
from streamproc.stream.pipeline import Pipeline, PipelineFailed
from streamproc.stream.publish import Unpublishable, publish
from streamproc.stream.records import Handler, InboundRecord, OutboundRecord, verdict_headers, verdict_records

__all__ = [
    "Handler",
    "InboundRecord",
    "OutboundRecord",
    "Pipeline",
    "PipelineFailed",
    "Unpublishable",
    "dead_letter",
    "dead_lettering",
    "publish",
    "too_large_letters",
    "verdict_headers",
    "verdict_records",
]
