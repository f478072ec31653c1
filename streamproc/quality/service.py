"""``streamproc quality``: labels in, accuracy out, final verdicts from human outcomes, appeals.

One process per deployment. It consumes the verdict, shadow, audit, label and appeal topics
in its own consumer group through the same ``Pipeline`` as the worker (an offset is
committed only once the outputs of it and everything before it are acknowledged), keeps
what it reads in the SQLite join store, exports accuracy figures computed from that store,
publishes a final verdict for every review or appeal outcome once the live verdict it
settles is known, and an appeal verdict for every appeal (see streamproc.quality.appeals)
once the appealed live verdict is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from streamproc.config import Settings
from streamproc.errors import redact_url
from streamproc.inference import InferenceClient, ModelRouter
from streamproc.kafka_security import client_options
from streamproc.metrics import NOOP, QualityRecorder, create_quality
from streamproc.policy import PolicySet
from streamproc.quality.appeal_evaluator import AppealEvaluator
from streamproc.quality.content_fetch import KafkaContentFetcher
from streamproc.quality.figures import refresh_figures
from streamproc.quality.processor import QualityProcessor
from streamproc.quality.store import QualityStore
from streamproc.stream import Pipeline, host

__all__ = [
    "QualityService",
    "consumed_topics",
    "open_store",
    "quality_group_id",
    "run_quality",
]

log = logging.getLogger(__name__)

_PRUNE_INTERVAL_SECONDS = 60.0


def quality_group_id(settings: Settings) -> str:
    """The quality service's consumer group."""
    return settings.quality.group_id or f"{settings.kafka.group_id}-quality"


def open_store(settings: Settings) -> QualityStore:
    """The join store in ``quality.data_dir``."""
    quality = settings.quality
    return QualityStore(
        quality.data_dir / "quality.sqlite3",
        retention=timedelta(days=quality.retention_days),
        max_items=quality.max_items,
    )


class QualityService:
    """Pipeline, store pruning and figure refreshes, started and stopped together."""

    def __init__(
        self, settings: Settings, store: QualityStore, metrics: QualityRecorder, policies: PolicySet
    ) -> None:
        self._settings = settings
        self._store = store
        self._store_failure: BaseException | None = None
        self._metrics = metrics
        quality = settings.quality
        inference = settings.inference
        if quality.appeal_model is not None:
            inference = inference.model_copy(update={"model": quality.appeal_model})
        # The pipeline's and the model client's own figures are the worker's; they are not
        # exported here so that dashboards do not mistake this service for a worker.
        embedding = settings.embedding.inference(settings.inference)  # embedding_probe packs
        self._model = ModelRouter(
            InferenceClient(inference, NOOP), InferenceClient(embedding, NOOP) if embedding else None
        )
        self._fetcher = KafkaContentFetcher(
            settings.kafka.bootstrap_servers,
            settings.kafka.client_id,
            timeout_seconds=quality.appeal_fetch_timeout_seconds,
            security=client_options(settings.kafka),
        )
        appeals = AppealEvaluator(
            policies,
            self._model,
            self._fetcher,
            metrics,
            model_name=inference.model,
            review_threshold=quality.appeal_review_threshold,
        )
        self.processor = QualityProcessor(
            settings.topics, store, metrics, appeals=appeals, worker_id=settings.kafka.client_id
        )
        self._pipeline: Pipeline | None = None  # made in run(): its consumer needs the loop
        self._stopped = False

    def stop(self) -> None:
        """Stop consuming; ``run`` then drains, commits and returns."""
        self._stopped = True
        if self._pipeline is not None:
            self._pipeline.stop()

    def ready(self) -> list[str]:
        """Not ready once the store failed, before the consumer group has given this service
        an assignment, and while stopping."""
        pipeline = self._pipeline
        reasons = ["starting: pipeline not set up yet"] if pipeline is None else pipeline.readiness()
        if self._store_failure is not None:
            reasons.insert(0, f"quality store {self._store.path} failed: {self._store_failure!r}")
        return reasons

    async def run(self) -> None:
        """Consume until ``stop()``; raises PipelineFailed (e.g. on a store error)."""
        settings = self._settings
        self._pipeline = Pipeline(
            settings.kafka.model_copy(update={"group_id": quality_group_id(settings)}),
            settings.worker,
            self.processor.process,
            NOOP,
            topics=consumed_topics(settings),
            too_large=self.processor.too_large,
        )
        if self._stopped:  # a signal arrived while starting
            self._pipeline.stop()
        self._maintain()
        maintenance = asyncio.create_task(self._maintain_periodically())
        maintenance.add_done_callback(self._maintenance_ended)
        try:
            await self._pipeline.run()
        finally:
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance
            await self._fetcher.close()
            await self._model.aclose()
        self._maintain()

    def _maintenance_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            # Stale figures must not go unnoticed: stop; run() then raises the error.
            log.critical("quality store maintenance failed; stopping", exc_info=error)
            self._store_failure = error
            self.stop()

    def _maintain(self, *, prune: bool = True) -> None:
        if prune:
            removed = self._store.prune(datetime.now(UTC))
            if removed:
                log.info("pruned %d content revisions from the quality store", removed)
                self.processor.dirty = True
        if self.processor.dirty:
            self.processor.dirty = False
            refresh_figures(self._store, self._metrics)
        self._metrics.figures_checked()

    async def _maintain_periodically(self) -> None:
        loop = asyncio.get_running_loop()
        last_prune = loop.time()
        while True:
            await asyncio.sleep(self._settings.quality.refresh_seconds)
            prune = loop.time() - last_prune >= _PRUNE_INTERVAL_SECONDS
            if prune:
                last_prune = loop.time()
            self._maintain(prune=prune)


def consumed_topics(settings: Settings) -> tuple[str, ...]:
    """The topics the quality service reads."""
    topics = settings.topics
    return (topics.verdicts, topics.shadow, topics.audit, topics.labels, topics.appeals)


def run_quality(settings: Settings, store: QualityStore, policies: PolicySet) -> None:
    """Serve /metrics, /healthz and /readyz and run the quality service until SIGTERM or Ctrl-C.

    ``policies``: the live packs appeals are re-evaluated with (read once, at start).

    Raises:
        PipelineFailed: a record could not be finished (e.g. a store error).
    """
    host.configure_logging(settings.worker.log_level, settings.worker.log_format)
    registry = CollectorRegistry()
    metrics = create_quality(registry, consumed_topics=consumed_topics(settings))
    try:
        server = None
        if settings.metrics.enabled:
            server = host.serve_metrics(
                registry,
                settings.metrics.host,
                settings.quality.metrics_port,
                port_setting="STREAMPROC_QUALITY__METRICS_PORT",
            )
        host.log_startup(
            "quality",
            {
                "bootstrap_servers": settings.kafka.bootstrap_servers,
                "group_id": quality_group_id(settings),
                "store_path": str(store.path),
                "store_items": store.item_count(),
                "model_url": redact_url(settings.inference.base_url),
                "packs": sorted(policies.versions.values()),  # each version names its pack
                "metrics_address": f"{server.host}:{server.port}" if server is not None else "disabled",
            },
        )
        host.run(QualityService(settings, store, metrics, policies), server)
    finally:
        store.close()
