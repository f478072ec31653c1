"""The Kafka edge: consume content, publish verdicts, dead letters and reviews."""

from streamproc.worker.app import ModerationService, create_app, run_worker, worker_topics
from streamproc.worker.pipeline import Pipeline, PipelineFailed, publish
from streamproc.worker.processor import ModelClient, Processor
from streamproc.worker.records import InboundRecord, OutboundRecord

__all__ = [
    "InboundRecord",
    "ModelClient",
    "ModerationService",
    "OutboundRecord",
    "Pipeline",
    "PipelineFailed",
    "Processor",
    "create_app",
    "publish",
    "run_worker",
    "worker_topics",
]
