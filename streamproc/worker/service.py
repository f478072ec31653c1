"""The worker process: model client, processor, policy watcher and pipeline, run together.

With ``worker.processes`` above 1 the command's process supervises that many worker
processes instead (streamproc.stream.supervisor): each one a member of the consumer group
with its own Kafka clients, model client and adaptive limit; one metrics port for all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from pathlib import Path

from prometheus_client import CollectorRegistry

from streamproc.config import Settings
from streamproc.decision import SecondModel
from streamproc.errors import redact_url, safe_text
from streamproc.inference import InferenceClient, ModelRouter, open_router
from streamproc.metrics import PrometheusWorkerMetrics, WorkerRecorder, create
from streamproc.policy import PolicySet, load_policy_set
from streamproc.policy.tokenizer_tokens import register_tokenizers
from streamproc.stream import Pipeline, PipelineFailed, host
from streamproc.stream.health import HealthServer, StatusFile
from streamproc.stream.supervisor import MetricsPort, supervise
from streamproc.worker.policy_watch import publish_policy_info, watch_policies
from streamproc.worker.processor import Processor

__all__ = ["ModerationService", "member_settings", "run_worker", "worker_topics"]

#: Beyond the drain timeout, what a stopping process may need to commit and close its clients.
_STOP_MARGIN_SECONDS = 15.0

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


class ModerationService:
    """Consume the content topics and publish verdicts until ``stop()``."""

    def __init__(self, settings: Settings, policies: PolicySet, metrics: WorkerRecorder) -> None:
        self._settings = settings
        self._policies = policies
        self._metrics = metrics
        self._pipeline: Pipeline | None = None
        self._client: ModelRouter | None = None
        self._stopped = False
        self._rejected_change: str | None = None  # why the last policy change was rejected

    def ready(self) -> list[str]:
        """Not ready before the packs are handed to a processor and the consumer group has
        given this worker an assignment, and while the model server's circuit is open."""
        pipeline, client = self._pipeline, self._client
        if pipeline is None or client is None:
            return ["starting: model client and pipeline not set up yet"]
        reasons = pipeline.readiness()
        reasons += [f"model server {url} unavailable: circuit open" for url in client.unavailable]
        return reasons

    def notices(self) -> list[str]:
        """A rejected policy change, until a later one applies: the worker serves on with the
        packs it had, so it stays ready, but /readyz says so."""
        rejected = self._rejected_change
        return [rejected] if rejected is not None else []

    def _policy_change_rejected(self, why: str | None) -> None:
        self._rejected_change = safe_text(why, 2_000) if why is not None else None  # one line

    def stop(self) -> None:
        """Stop fetching; ``run`` then drains, commits and returns."""
        self._stopped = True
        if self._pipeline is not None:
            self._pipeline.stop()

    async def run(self) -> None:
        """Run until ``stop()``; raises PipelineFailed if an item could not be finished."""
        settings, metrics = self._settings, self._metrics
        embedding = settings.embedding.inference(settings.inference)  # None: the model server's
        async with (
            open_router(settings.inference, embedding, _WithoutGauges(metrics)) as client,
            _second_model(settings, metrics) as second,
        ):
            self._client = client
            # One series each for both servers: what readiness and the alerts read.
            metrics.watch_model(
                concurrency_limit=lambda: client.concurrency_limit,
                prompts_in_flight=lambda: client.prompts_in_flight,
                circuit_open=lambda: not client.available,
            )
            processor = Processor(
                settings.topics,
                settings.audit,
                self._policies,
                client,
                metrics,
                model_name=settings.inference.model,
                embedding_model_name=(embedding or settings.inference).model,
                worker_id=settings.kafka.client_id,
                second=second,
            )
            self._pipeline = Pipeline(
                settings.kafka,
                settings.worker,
                processor.process,
                metrics,
                topics=(settings.topics.listings, settings.topics.videos),
                ready=lambda: not client.holding,  # review mode: an open circuit escalates
                too_large=processor.too_large,
            )
            if self._stopped:  # a signal arrived while starting
                self._pipeline.stop()
            watcher: asyncio.Task[None] | None = None
            if settings.policy.watch:
                # The shadow topic was checked at start only if shadow packs were loaded then.
                watcher = asyncio.create_task(
                    watch_policies(
                        settings.policy.paths,
                        processor.replace_policies,
                        metrics,
                        allow_shadows=bool(self._policies.shadow_policies),
                        rejected=self._policy_change_rejected,
                    )
                )
            try:
                await self._pipeline.run()
            finally:
                if watcher is not None:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher


@contextlib.asynccontextmanager
async def _second_model(settings: Settings, metrics: WorkerRecorder) -> AsyncIterator[SecondModel | None]:
    """The cascade's second model client, when ``cascade.model`` is set."""
    inference = settings.cascade.inference(settings.inference)
    if inference is None:
        yield None
        return
    async with InferenceClient(inference, _WithoutGauges(metrics)) as client:
        yield SecondModel(client, inference.model)


class _WithoutGauges:
    """A client's requests, latency and errors counted as the worker's; the limit,
    prompts-in-flight and circuit gauges are set once for the worker's model servers
    together (one series each, read by readiness and alerts)."""

    def __init__(self, metrics: WorkerRecorder) -> None:
        self._metrics = metrics

    def watch_model(
        self,
        *,
        concurrency_limit: Callable[[], float],
        prompts_in_flight: Callable[[], float],
        circuit_open: Callable[[], bool],
    ) -> None:
        pass

    def model_request_in_flight(self) -> AbstractContextManager[object]:
        return self._metrics.model_request_in_flight()

    def model_request_latency(self, seconds: float) -> None:
        self._metrics.model_request_latency(seconds)

    def inference_error(self, kind: str) -> None:
        self._metrics.inference_error(kind)

    def inference_retry(self) -> None:
        self._metrics.inference_retry()


def run_worker(settings: Settings, policies: PolicySet) -> None:
    """Serve /metrics, /healthz and /readyz and run the worker until SIGTERM or Ctrl-C; with
    ``worker.processes`` above 1, as that many supervised processes.

    Raises:
        PipelineFailed: an item could not be finished (its offset was not committed).
        ChildFailed: one of several worker processes exited unexpectedly.
    """
    host.configure_logging(settings.worker.log_level, settings.worker.log_format)
    processes = settings.worker.processes
    if processes == 1:
        metrics = _metrics(settings, policies)
        server = None
        if settings.metrics.enabled:
            server = host.serve_metrics(
                metrics.registry, settings.metrics.host, settings.metrics.port, port_setting=_PORT_SETTING
            )
        host.log_startup("worker", _summary(settings, policies, server))
        host.run(ModerationService(settings, policies, metrics), server)
        return
    port = MetricsPort(settings.metrics.host, settings.metrics.port, _PORT_SETTING)
    summary = _summary(settings, policies, None)
    summary["metrics_address"] = f"{port.host}:{port.port}" if settings.metrics.enabled else "disabled"
    host.log_startup("worker", {**summary, "processes": processes})
    supervise(
        _worker_process,
        (settings,),
        processes,
        name="worker",
        metrics=port if settings.metrics.enabled else None,
        stop_timeout_seconds=settings.worker.drain_timeout_seconds + _STOP_MARGIN_SECONDS,
    )


_PORT_SETTING = "STREAMPROC_METRICS__PORT"


def member_settings(settings: Settings, index: int) -> Settings:
    """The settings of worker process ``index`` of several: a client id of its own and, with
    static membership, a group instance id of its own (two members may not share one)."""
    kafka = settings.kafka
    update: dict[str, object] = {"client_id": f"{kafka.client_id}-{index}"}
    if kafka.group_instance_id is not None:
        update["group_instance_id"] = f"{kafka.group_instance_id}-{index}"
    return settings.model_copy(update={"kafka": kafka.model_copy(update=update)})


def _worker_process(settings: Settings, index: int, status_path: Path) -> None:
    """One supervised worker process (started by ``supervise``; its metrics go to the files
    the supervisor serves, its probes to ``status_path``)."""
    host.configure_logging(settings.worker.log_level, settings.worker.log_format)
    settings = member_settings(settings, index)
    policies = load_policy_set(settings.policy.paths)  # checked by the supervisor already
    register_tokenizers(settings.policy.tokenizer_dirs)  # a process of its own: its own neutraliser
    metrics = _metrics(settings, policies)
    log.info("worker process %d running (pid %d, client id %s)", index, os.getpid(), settings.kafka.client_id)
    try:
        host.run(ModerationService(settings, policies, metrics), StatusFile(status_path))
    except PipelineFailed as exc:
        log.critical("worker process %d stopped: %s", index, exc)
        sys.exit(1)


def _metrics(settings: Settings, policies: PolicySet) -> PrometheusWorkerMetrics:
    metrics = create(
        CollectorRegistry(),
        consumed_topics=(settings.topics.listings, settings.topics.videos),
        categories=policies.category_ids,
    )
    publish_policy_info(metrics, policies)
    return metrics


def _summary(settings: Settings, policies: PolicySet, server: HealthServer | None) -> dict[str, object]:
    embedding_url = settings.embedding.base_url
    summary: dict[str, object] = {
        "bootstrap_servers": settings.kafka.bootstrap_servers,
        "group_id": settings.kafka.group_id,
        "group_instance_id": settings.kafka.group_instance_id,  # None: dynamic membership
        "on_unavailable": settings.inference.on_unavailable,
        "model_url": redact_url(settings.inference.base_url),
        "model_name": settings.inference.model,
        "cascade_model": settings.cascade.model,  # None: no cascade
        "embedding_url": embedding_url and redact_url(embedding_url),  # None: the model server's
        "embedding_model": settings.embedding.model,
        "packs": sorted(policies.versions.values()),  # each version names its pack
        "metrics_address": f"{server.host}:{server.port}" if server is not None else "disabled",
    }
    if policies.shadow_policies:
        summary["shadow_packs"] = sorted(policies.shadow_versions.values())
    return summary
