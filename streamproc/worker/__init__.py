"""``streamproc worker``: content events in, verdicts, reviews, audit samples and dead letters out."""

from streamproc.worker.processor import Processor
from streamproc.worker.service import ModerationService, create_app, run_worker, worker_topics

__all__ = ["ModerationService", "Processor", "create_app", "run_worker", "worker_topics"]
