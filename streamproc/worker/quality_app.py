"""``streamproc quality``: labels in, accuracy out, and final verdicts from human review outcomes.

One process per deployment. It consumes the verdict, shadow, audit and label topics in its
own consumer group through the same ``Pipeline`` as the worker (an offset is committed
only once the outputs of it and everything before it are acknowledged), keeps what it
reads in the SQLite join store, exports accuracy figures computed from that store, and
publishes a final verdict for every review or appeal outcome once the live verdict it
settles is known. A plain asyncio process: it has no agents or tables for faust to host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from pydantic import BaseModel, ValidationError

from streamproc.config import Settings
from streamproc.errors import DecodeError, InvalidJson, SchemaValidationError, UnsupportedSchemaVersion
from streamproc.metrics import QualityMetrics, create_quality
from streamproc.metrics import create as create_worker_metrics
from streamproc.quality.join import accuracy, check_label, final_verdict, labeler_agreement, settles
from streamproc.quality.store import QualityStore, StoreError
from streamproc.schemas import AuditSample, DeadLetterReason, LabelEvent, SourceRef, Verdict, encode
from streamproc.worker.dlq import dead_letter
from streamproc.worker.pipeline import Pipeline
from streamproc.worker.records import InboundRecord, OutboundRecord

__all__ = [
    "QualityProcessor",
    "QualityService",
    "open_store",
    "quality_group_id",
    "refresh_figures",
    "run_quality",
]

log = logging.getLogger(__name__)

_M = TypeVar("_M", bound=BaseModel)
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


class QualityProcessor:
    """One record in, its outputs out: final verdicts and dead letters.

    Store errors are raised: the item then stays uncommitted and the service stops, rather
    than losing a record. Everything written for one record is one transaction.
    """

    def __init__(
        self,
        settings: Settings,
        store: QualityStore,
        metrics: QualityMetrics,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self._clock = clock
        #: Set when the store changed; the exported figures are recomputed then.
        self.dirty = True

    async def process(self, record: InboundRecord) -> list[OutboundRecord]:
        self._metrics.records_consumed.labels(topic=record.topic).inc()
        try:
            return self._process(record)
        except DecodeError as exc:
            log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc)
            return [self._dead_letter(record, exc.kind, exc)]  # type: ignore[arg-type]
        except StoreError:
            raise
        except Exception as exc:
            log.exception("internal error on %s[%d]@%d", record.topic, record.partition, record.offset)
            return [self._dead_letter(record, "internal_error", exc)]

    def _process(self, record: InboundRecord) -> list[OutboundRecord]:
        topics = self._settings.topics
        if record.topic == topics.labels:
            return self._label(record)
        if record.topic == topics.audit:
            self.dirty |= self._store.add_audit(_decode(AuditSample, record.value, "audit sample"))
            return []
        verdict = _decode(Verdict, record.value, "verdict")
        if record.topic == topics.shadow:
            if verdict.mode != "shadow":
                raise SchemaValidationError("a verdict on the shadow topic must have mode shadow")
            self.dirty |= self._store.add_verdict(verdict)
            return []
        if verdict.decided_by.kind == "human":  # a final verdict, ours, read back
            self.dirty |= self._store.add_final(verdict)
            return []
        if verdict.mode != "live":
            raise SchemaValidationError("a verdict on the verdict topic must have mode live")
        self.dirty |= self._store.add_verdict(verdict)
        return self._finals(verdict.content_type, verdict.content_id, verdict.revision)

    def _label(self, record: InboundRecord) -> list[OutboundRecord]:
        label = _decode(LabelEvent, record.value, "label")
        check_label(label)
        read_from = SourceRef(topic=record.topic, partition=record.partition, offset=record.offset)
        self.dirty |= self._store.add_label(label, read_from)
        if not settles(label):
            return []
        return self._finals(label.content_type, label.content_id, label.revision)

    def _finals(self, content_type: str, content_id: str, revision: int) -> list[OutboundRecord]:
        """Final verdicts owed for the revision: its outcomes whose final was not read back yet.

        Published again whenever a record of the revision is processed again (redelivery),
        until the final is seen on the verdict topic: at least once, same idempotency key.
        """
        original = self._store.original_verdict(content_type, content_id, revision)
        if original is None:
            return []  # kept; published when the live verdict arrives
        outputs = []
        for label, read_from in self._store.settling_labels(content_type, content_id, revision):
            final = final_verdict(original, label, source=read_from, now=self._clock())
            if self._store.has_final(final.idempotency_key):
                continue
            self._metrics.final_verdicts_published.labels(source=label.source).inc()
            headers = (
                ("content-type", b"application/json"),
                ("decision", final.decision.encode()),
                ("idempotency-key", final.idempotency_key.encode()),
            )
            outputs.append(
                OutboundRecord(
                    self._settings.topics.verdicts, final.content_id.encode(), encode(final), headers
                )
            )
        return outputs

    def _dead_letter(
        self, record: InboundRecord, reason: DeadLetterReason, error: Exception
    ) -> OutboundRecord:
        self._metrics.dead_letters.labels(reason=reason).inc()
        return dead_letter(
            record,
            reason,
            error,
            dlq_topic=self._settings.topics.dlq,
            worker=self._settings.kafka.client_id,
            now=self._clock(),
        )


def refresh_figures(store: QualityStore, metrics: QualityMetrics) -> None:
    """Set every store-derived gauge from the store; series that no longer exist are removed."""
    gauges = _Gauges(metrics)
    metrics.store_items.set(store.item_count())
    counts = store.label_counts()
    for source in ("qa_audit", "review", "appeal", *counts):
        gauges.put(metrics.labels, counts.get(source, 0), source)

    live: dict[str, tuple[int, int]] = {}
    for row in store.verdict_counts():
        gauges.put(metrics.verdicts, row.count, row.policy_version, row.mode, row.decision)
        if row.mode == "live":
            automated, total = live.get(row.policy_version, (0, 0))
            live[row.policy_version] = (automated + row.count * (row.decision != "review"), total + row.count)
    for version, (automated, total) in live.items():
        gauges.put(metrics.automation, automated / total, version)

    items = list(store.labeled_items())
    for (version, mode), result in accuracy(items).items():
        gauges.put(metrics.pairs, result.pairs, version, mode)
        gauges.put(metrics.pairs_excluded, result.excluded, version, mode, "inference_error")
        for category, confusion in result.confusion.items():
            for outcome in ("tp", "fp", "fn", "tn"):
                gauges.put(metrics.confusion, getattr(confusion, outcome), version, mode, category, outcome)
            gauges.put(metrics.precision, confusion.precision, version, mode, category)
            gauges.put(metrics.recall, confusion.recall, version, mode, category)
            gauges.put(metrics.f1, confusion.f1, version, mode, category)

    agreement = labeler_agreement(item.labels for item in items)
    metrics.labeler_pairs.set(agreement.pairs)
    metrics.labeler_exact_agreement.set(agreement.exact_ratio)
    for category in agreement.per_category:
        gauges.put(metrics.labeler_agreement, agreement.ratio(category), category)

    for shadow in store.shadow_agreement():
        gauges.put(metrics.shadow_compared, shadow.compared, shadow.policy_version)
        gauges.put(metrics.shadow_agreement, shadow.ratio, shadow.policy_version)
    for human in store.human_counts():
        overturned = "true" if human.overturned else "false"
        gauges.put(metrics.human_verdicts, human.count, human.policy_version, human.source, overturned)
    gauges.remove_unseen()


class _Gauges:
    """Sets labelled gauges and removes, at the end, the series not set this time (pruned data).

    Values are set in place, never cleared first, so a scrape meanwhile sees old or new
    values, not gaps.
    """

    def __init__(self, metrics: QualityMetrics) -> None:
        self._metrics = metrics
        self._seen: dict[int, set[tuple[str, ...]]] = {}

    def put(self, gauge: Gauge, value: float, *labels: str) -> None:
        gauge.labels(*labels).set(value)
        self._seen.setdefault(id(gauge), set()).add(labels)

    def remove_unseen(self) -> None:
        metrics = self._metrics
        labelled = (
            metrics.labels,
            metrics.verdicts,
            metrics.automation,
            metrics.pairs,
            metrics.pairs_excluded,
            metrics.confusion,
            metrics.precision,
            metrics.recall,
            metrics.f1,
            metrics.labeler_agreement,
            metrics.shadow_compared,
            metrics.shadow_agreement,
            metrics.human_verdicts,
        )
        for gauge in labelled:
            seen = self._seen.get(id(gauge), set())
            held = {tuple(s.labels.values()) for family in gauge.collect() for s in family.samples}
            for labels in held - seen:
                gauge.remove(*labels)


class QualityService:
    """Pipeline, store pruning and figure refreshes, started and stopped together."""

    def __init__(self, settings: Settings, store: QualityStore, metrics: QualityMetrics) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self.processor = QualityProcessor(settings, store, metrics)
        kafka = settings.kafka.model_copy(update={"group_id": quality_group_id(settings)})
        self._pipeline = Pipeline(
            settings.model_copy(update={"kafka": kafka}),
            self.processor.process,
            # The pipeline's own gauges and counters are the worker's; they are not served
            # here so that dashboards do not mistake this service for a moderation worker.
            create_worker_metrics(CollectorRegistry()),
            topics=(
                settings.topics.verdicts,
                settings.topics.shadow,
                settings.topics.audit,
                settings.topics.labels,
            ),
        )

    def stop(self) -> None:
        """Stop consuming; ``run`` then drains, commits and returns."""
        self._pipeline.stop()

    async def run(self) -> None:
        """Consume until ``stop()``; raises PipelineFailed (e.g. on a store error)."""
        self._maintain()
        maintenance = asyncio.create_task(self._maintain_periodically())
        maintenance.add_done_callback(self._maintenance_ended)
        try:
            await self._pipeline.run()
        finally:
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance
        self._maintain()

    def _maintenance_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            # Stale figures must not go unnoticed: stop; run() then raises the error.
            log.critical("quality store maintenance failed; stopping", exc_info=error)
            self._pipeline.stop()

    def _maintain(self, *, prune: bool = True) -> None:
        if prune:
            removed = self._store.prune(datetime.now(UTC))
            if removed:
                log.info("pruned %d content revisions from the quality store", removed)
                self.processor.dirty = True
        if self.processor.dirty:
            self.processor.dirty = False
            refresh_figures(self._store, self._metrics)
        self._metrics.figures_updated.set_to_current_time()

    async def _maintain_periodically(self) -> None:
        loop = asyncio.get_running_loop()
        last_prune = loop.time()
        while True:
            await asyncio.sleep(self._settings.quality.refresh_seconds)
            prune = loop.time() - last_prune >= _PRUNE_INTERVAL_SECONDS
            if prune:
                last_prune = loop.time()
            self._maintain(prune=prune)


def run_quality(settings: Settings, store: QualityStore) -> None:
    """Serve /metrics and run the quality service until SIGTERM or Ctrl-C."""
    logging.basicConfig(
        level=settings.worker.log_level.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s"
    )
    topics = settings.topics
    registry = CollectorRegistry()
    metrics = create_quality(
        registry, consumed_topics=(topics.verdicts, topics.shadow, topics.audit, topics.labels)
    )
    if settings.metrics.enabled:
        server, _thread = start_http_server(settings.quality.metrics_port, settings.metrics.host, registry)
        log.info("metrics at http://%s:%d/metrics", settings.metrics.host, server.server_port)
    log.info(
        "quality store %s (%d content revisions), consumer group %s",
        store.path,
        store.item_count(),
        quality_group_id(settings),
    )

    async def main() -> None:
        service = QualityService(settings, store, metrics)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.stop)
        await service.run()

    try:
        asyncio.run(main())
    finally:
        store.close()


def _decode(model: type[_M], raw: bytes | None, what: str) -> _M:
    """Parse one record value, with the worker's decode errors (and dead-letter reasons)."""
    if raw is None:
        raise InvalidJson("record has no value (tombstone); expected a JSON object")
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"value is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidJson(f"value is JSON {type(data).__name__}, expected an object")
    version = data.get("schema_version", 1)
    if version != 1:
        raise UnsupportedSchemaVersion(
            f"schema_version {version!r} is not supported for a {what} (supported: [1])"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise SchemaValidationError(f"{exc.error_count()} invalid field(s) in {what}: {problems}") from exc
