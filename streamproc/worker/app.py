"""The Kafka edge: a faust app whose agent feeds records to the Processor and publishes.

Delivery is at least once. The agent takes a batch of events, processes them
concurrently (the model server batches them), publishes every output and waits for the
broker to acknowledge each one; only then does faust ack the batch's events, and faust
commits only a contiguous prefix of acked offsets per partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Any

import faust
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, start_http_server
from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

from streamproc.config import Settings
from streamproc.inference import InferenceClient
from streamproc.metrics import Metrics
from streamproc.metrics import create as create_metrics
from streamproc.policy import PolicySet
from streamproc.worker.policy_watch import publish_policy_info, watch_policies
from streamproc.worker.processor import Processor
from streamproc.worker.records import InboundRecord, OutboundRecord

__all__ = ["create_app", "publish", "run_worker"]

log = logging.getLogger(__name__)


def create_app(settings: Settings, policies: PolicySet, metrics: Metrics) -> faust.App:
    """Build the faust app with its one moderation agent."""
    kafka = settings.kafka
    app = faust.App(
        kafka.group_id,
        broker=[f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(",")],
        broker_client_id=kafka.client_id,
        key_serializer="raw",
        value_serializer="raw",
        # Topics are declared by `streamproc topics apply` from topics/, not by the worker.
        topic_allow_declare=False,
        topic_disable_leader=True,
        web_enabled=False,
        autodiscover=False,
        datadir=str(settings.worker.data_dir),
        consumer_auto_offset_reset=kafka.auto_offset_reset,
        broker_session_timeout=kafka.session_timeout_seconds,
        broker_heartbeat_interval=kafka.heartbeat_interval_seconds,
        broker_rebalance_timeout=kafka.rebalance_timeout_seconds,
        stream_buffer_maxsize=max(4096, 2 * settings.worker.batch_max),
    )
    source = app.topic(settings.topics.listings, settings.topics.videos)

    @app.agent(source, name="moderate")
    async def moderate(stream: faust.StreamT[Any]) -> None:
        async with InferenceClient(settings.inference, metrics) as client:
            processor = Processor(settings, policies, client, metrics)
            watcher = None
            if settings.policy.watch:
                watcher = asyncio.create_task(
                    watch_policies(settings.policy.paths, processor.replace_policies, metrics)
                )
            try:
                await _moderate(stream, processor, settings, app)
            finally:
                if watcher is not None:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher

    return app


async def _moderate(
    stream: faust.StreamT[Any], processor: Processor, settings: Settings, app: faust.App
) -> None:
    async for events in stream.take_events(  # type: ignore[attr-defined]
        settings.worker.batch_max, within=settings.worker.batch_within_seconds
    ):
        records = [_inbound(event.message) for event in events]
        results = await asyncio.gather(*(processor.process(r) for r in records))
        try:
            await publish(app.producer, [out for outputs in results for out in outputs])
        except Exception:
            # Leaving this loop with an error would still ack the batch (faust acks in
            # take_events' cleanup) and lose it. Exit without acking: the group
            # redelivers the batch to the next owner.
            log.critical("cannot publish outputs; exiting so the batch is redelivered", exc_info=True)
            os._exit(70)


def _inbound(message: Any) -> InboundRecord:
    return InboundRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
    )


async def publish(producer: Any, records: Sequence[OutboundRecord]) -> None:
    """Send all records and wait until the broker has acknowledged every one.

    Broker errors are retried with jittered back-off without end: returning early
    would let the caller ack input whose outputs were never written.
    """
    pending = list(records)
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(KafkaError),
        wait=wait_random_exponential(multiplier=0.1, max=5.0),
        before_sleep=lambda state: log.warning(
            "publishing %d records failed, retrying: %r",
            len(pending),
            state.outcome.exception() if state.outcome else None,
        ),
    )
    async for attempt in retrying:
        with attempt:
            futures = [
                await producer.send(r.topic, r.key, r.value, None, None, list(r.headers)) for r in pending
            ]
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            failed = [r for r, o in zip(pending, outcomes, strict=True) if isinstance(o, BaseException)]
            if failed:
                errors = [o for o in outcomes if isinstance(o, BaseException)]
                pending = failed
                raise errors[0]


def run_worker(settings: Settings, policies: PolicySet) -> None:
    """Serve /metrics and run the faust worker until SIGTERM or Ctrl-C."""
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
