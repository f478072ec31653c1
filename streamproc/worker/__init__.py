"""The Kafka edge: consume content, publish verdicts, dead letters and reviews."""

from streamproc.worker.app import create_app, publish, run_worker
from streamproc.worker.processor import ModelClient, Processor
from streamproc.worker.records import InboundRecord, OutboundRecord

__all__ = [
    "InboundRecord",
    "ModelClient",
    "OutboundRecord",
    "Processor",
    "create_app",
    "publish",
    "run_worker",
]
