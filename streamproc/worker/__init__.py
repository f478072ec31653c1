"""``streamproc worker``: content events in, verdicts, reviews, audit samples and dead letters out."""

from streamproc.worker.processor import Processor
from streamproc.worker.service import ModerationService, run_worker, worker_topics

__all__ = ["ModerationService", "Processor", "run_worker", "worker_topics"]
