"""The Kafka runtime shared by the worker and the quality service: records, the in-flight
pipeline with safe commits and backpressure, and dead-lettering."""

from streamproc.stream.dead_letter import dead_letter
from streamproc.stream.pipeline import Handler, Pipeline, PipelineFailed, publish
from streamproc.stream.records import InboundRecord, OutboundRecord, verdict_headers, verdict_records

__all__ = [
    "Handler",
    "InboundRecord",
    "OutboundRecord",
    "Pipeline",
    "PipelineFailed",
    "dead_letter",
    "publish",
    "verdict_headers",
    "verdict_records",
]
