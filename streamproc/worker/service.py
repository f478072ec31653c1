"""The worker process: a faust app whose one service runs the moderation pipeline.

faust provides the process: start-up, signal handling, logging and an orderly stop.
The hot path (consume, process, produce, commit) is the ``Pipeline`` on aiokafka; the app
declares no agents, so faust's own consumer joins no group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import faust
from mode import Service
from prometheus_client import CollectorRegistry, start_http_server

from streamproc.config import Settings
from streamproc.inference import InferenceClient
from streamproc.metrics import Metrics
from streamproc.metrics import create as create_metrics
from streamproc.policy import PolicySet
from streamproc.stream.pipeline import Pipeline
from streamproc.worker.policy_watch import publish_policy_info, watch_policies
from streamproc.worker.processor import Processor

__all__ = ["ModerationService", "create_app", "run_worker", "worker_topics"]

log = logging.getLogger(__name__)


def worker_topics(settings: Settings, policies: PolicySet) -> list[str]:
    """The topics a worker reads or writes, for the start-up check: content in; verdicts,
    review and dead letters out; audit when auditing; shadow when shadow packs are loaded."""
    topics = settings.topics
    names = [topics.listings, topics.videos, topics.verdicts, topics.review, topics.dlq]
    if settings.audit.enabled:
        names.append(topics.audit)
    if policies.shadow_policies:
        names.append(topics.shadow)
    return names


class ModerationService(Service):
    """Model client, processor, policy watcher and pipeline, started and stopped together."""

    def __init__(self, settings: Settings, policies: PolicySet, metrics: Metrics) -> None:
        super().__init__()
        self._settings = settings
        self._policies = policies
        self._metrics = metrics
        self._pipeline: Pipeline | None = None
        self._running: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        self._running = asyncio.create_task(self._run())

    async def on_stop(self) -> None:
        if self._pipeline is not None:
            self._pipeline.stop()
        if self._running is not None:
            await asyncio.wait([self._running])

    async def _run(self) -> None:
        settings, metrics = self._settings, self._metrics
        watcher: asyncio.Task[None] | None = None
        try:
            async with InferenceClient(settings.inference, metrics) as client:
                processor = Processor(settings, self._policies, client, metrics)
                self._pipeline = Pipeline(
                    settings,
                    processor.process,
                    metrics,
                    topics=(settings.topics.listings, settings.topics.videos),
                    ready=lambda: client.available,
                )
                if settings.policy.watch:
                    # The shadow topic was checked at start only if shadow packs were loaded then.
                    watcher = asyncio.create_task(
                        watch_policies(
                            settings.policy.paths,
                            processor.replace_policies,
                            metrics,
                            allow_shadows=bool(self._policies.shadow_policies),
                        )
                    )
                await self._pipeline.run()
        except Exception as exc:  # noqa: BLE001 - any failure must stop the worker, not just this task
            log.critical("worker failed: %s", exc)
            await self.crash(exc)
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher


def create_app(settings: Settings, policies: PolicySet, metrics: Metrics) -> faust.App:
    """The faust app that hosts the moderation service."""
    kafka = settings.kafka
    app = faust.App(
        f"{kafka.group_id}-worker",
        broker=[f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(",")],
        broker_client_id=kafka.client_id,
        topic_allow_declare=False,
        web_enabled=False,
        autodiscover=False,
        datadir=str(settings.worker.data_dir),
    )
    # A dependency starts with the app, before faust waits (up to 30 s) for table recovery
    # that an app without tables does not need.
    app.add_dependency(ModerationService(settings, policies, metrics))
    return app


def run_worker(settings: Settings, policies: PolicySet) -> None:
    """Serve /metrics and run the worker until SIGTERM or Ctrl-C."""
    registry = CollectorRegistry()
    metrics = create_metrics(
        registry,
        consumed_topics=(settings.topics.listings, settings.topics.videos),
        categories=policies.category_ids,
    )
    if settings.metrics.enabled:
        server, _thread = start_http_server(settings.metrics.port, settings.metrics.host, registry)
        log.info("metrics at http://%s:%d/metrics", settings.metrics.host, server.server_port)
    publish_policy_info(metrics, policies)
    app = create_app(settings, policies, metrics)
    faust.Worker(app, loglevel=settings.worker.log_level.upper()).execute_from_commandline()
