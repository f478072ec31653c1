"""``streamproc quality``: labels in, accuracy out, final verdicts from human outcomes, appeals.

One process per deployment. It consumes the verdict, shadow, audit, label and appeal topics
in its own consumer group through the same ``Pipeline`` as the worker (an offset is
committed only once the outputs of it and everything before it are acknowledged), keeps
what it reads in the SQLite join store, exports accuracy figures computed from that store,
publishes a final verdict for every review or appeal outcome once the live verdict it
settles is known, and an appeal verdict for every appeal (see streamproc.quality.appeals)
once the appealed live verdict is known. A plain asyncio process: it has no agents or
tables for faust to host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import get_args

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from streamproc.config import Settings
from streamproc.decision import ModelClient, content_ref, decide_verdict
from streamproc.errors import DecodeError, SchemaValidationError
from streamproc.inference import InferenceClient
from streamproc.metrics import QualityMetrics, create_quality
from streamproc.metrics import create as create_worker_metrics
from streamproc.policy import Policy, PolicySet
from streamproc.quality.appeals import AppealResult, appeal_policy, appeal_verdict, unavailable_verdict
from streamproc.quality.content_fetch import ContentFetcher, ContentUnavailable, KafkaContentFetcher
from streamproc.quality.join import accuracy, check_label, final_verdict, labeler_agreement, settles
from streamproc.quality.store import QualityStore, StoreError
from streamproc.schemas import (
    AppealEvent,
    AuditSample,
    ContentEvent,
    DeadLetterReason,
    LabelEvent,
    LabelSource,
    SourceRef,
    Verdict,
    decode_event,
    decode_record,
)
from streamproc.stream.dead_letter import dead_letter
from streamproc.stream.pipeline import Pipeline
from streamproc.stream.records import InboundRecord, OutboundRecord, verdict_records

__all__ = [
    "AppealEvaluator",
    "QualityProcessor",
    "QualityService",
    "consumed_topics",
    "open_store",
    "quality_group_id",
    "refresh_figures",
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


class AppealEvaluator:
    """Re-evaluates an appealed revision: its original record read back from Kafka, decided
    by the worker's decision path under the appeal policy (see streamproc.quality.appeals).

    Never raises for unreadable content or model failures: they become review verdicts.
    """

    def __init__(
        self,
        settings: Settings,
        policies: PolicySet,
        model: ModelClient,
        fetcher: ContentFetcher,
        metrics: QualityMetrics,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._policies = policies
        self._model = model
        self._fetcher = fetcher
        self._metrics = metrics
        self._clock = clock
        self._threshold = settings.quality.appeal_review_threshold
        self.model_name = settings.quality.appeal_model or settings.inference.model
        self._appeal_policies: dict[str, Policy] = {}

    async def verdict(self, original: Verdict, appeal: AppealEvent, source: SourceRef) -> Verdict:
        """The appeal verdict for ``appeal`` (read at ``source``) of the live verdict ``original``."""
        received = time.perf_counter()
        result: AppealResult
        try:
            event = await self._content(original)
        except (ContentUnavailable, DecodeError) as exc:
            log.warning(
                "appeal %s of %s: the original content is unavailable (%s: %s); sent to a human",
                appeal.appeal_id,
                original.idempotency_key,
                exc.kind,
                exc,
            )
            verdict = unavailable_verdict(
                original,
                appeal,
                model=self.model_name,
                review_sla_hours=self._sla(original),
                source=source,
                processing_seconds=time.perf_counter() - received,
                now=self._clock(),
            )
            result = "content_unavailable"
        else:
            live = self._policies.select(event)
            policy = self._appeal_policy(live)
            evaluated, _ = await decide_verdict(
                policy,
                self._policies.rules(live),
                event,
                self._model,
                model_name=self.model_name,
                source=source,
                received=received,
                clock=self._clock,
            )
            verdict, result = appeal_verdict(
                original,
                appeal,
                evaluated,
                policy=policy,
                event=event,
                source=source,
                now=evaluated.produced_at,
            )
        self._metrics.appeals.labels(outcome=result).inc()
        log.info(
            "appeal %s of %s: %s (%s)", appeal.appeal_id, original.idempotency_key, result, verdict.decision
        )
        return verdict

    async def _content(self, original: Verdict) -> ContentEvent:
        """The appealed revision's content event, read back from where the worker read it."""
        where = original.source
        event = decode_event(original.content_type, await self._fetcher.fetch(where))
        if content_ref(event) != (original.content_type, original.content_id) or (
            event.revision != original.revision
        ):
            raise ContentUnavailable(
                f"the record at {where.topic}[{where.partition}]@{where.offset} is "
                f"{':'.join(content_ref(event))} revision {event.revision}, not the appealed one"
            )
        return event

    def _appeal_policy(self, live: Policy) -> Policy:
        policy = self._appeal_policies.get(live.version)
        if policy is None:
            policy = self._appeal_policies[live.version] = appeal_policy(live, self._threshold)
        return policy

    def _sla(self, original: Verdict) -> float:
        """The review SLA of the appealed verdict's pack (by name), else its content type's default."""
        name = original.policy_version.partition("@")[0]
        packs = [p for p in self._policies.policies if p.content_type == original.content_type]
        pack = next((p for p in packs if p.name == name), None) or next(p for p in packs if not p.verticals)
        return pack.review_sla_hours


class QualityProcessor:
    """One record in, its outputs out: final verdicts, appeal verdicts and dead letters.

    Store errors are raised: the item then stays uncommitted and the service stops, rather
    than losing a record. Everything written for one record is one transaction.
    """

    def __init__(
        self,
        settings: Settings,
        store: QualityStore,
        metrics: QualityMetrics,
        *,
        appeals: AppealEvaluator | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        #: Without one, appeals are stored and left unanswered.
        self._appeals = appeals
        self._clock = clock
        #: Set when the store changed; the exported figures are recomputed then.
        self.dirty = True

    async def process(self, record: InboundRecord) -> list[OutboundRecord]:
        self._metrics.records_consumed.labels(topic=record.topic).inc()
        try:
            return await self._process(record)
        except DecodeError as exc:
            log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc)
            return [self._dead_letter(record, exc.kind, exc)]  # type: ignore[arg-type]
        except StoreError:
            raise
        except Exception as exc:
            log.exception("internal error on %s[%d]@%d", record.topic, record.partition, record.offset)
            return [self._dead_letter(record, "internal_error", exc)]

    async def _process(self, record: InboundRecord) -> list[OutboundRecord]:
        topics = self._settings.topics
        if record.topic == topics.labels:
            return self._label(record)
        if record.topic == topics.appeals:
            return await self._appeal(record)
        if record.topic == topics.audit:
            self.dirty |= self._store.add_audit(decode_record(AuditSample, record.value, "audit sample"))
            return []
        verdict = decode_record(Verdict, record.value, "verdict")
        if record.topic == topics.shadow:
            if verdict.mode != "shadow":
                raise SchemaValidationError("a verdict on the shadow topic must have mode shadow")
            self.dirty |= self._store.add_verdict(verdict)
            return []
        return await self._verdict(verdict)

    async def _verdict(self, verdict: Verdict) -> list[OutboundRecord]:
        """A record of the verdict topic: automated, or one of ours read back."""
        if verdict.appeal is not None:  # an appeal verdict, ours, read back: never scored
            self._store.add_appeal_verdict(verdict)
            return []
        if verdict.decided_by.kind == "human":  # a final verdict, ours, read back
            self.dirty |= self._store.add_final(verdict)
            return []
        if verdict.mode != "live":
            raise SchemaValidationError("a verdict on the verdict topic must have mode live")
        self.dirty |= self._store.add_verdict(verdict)
        revision = (verdict.content_type, verdict.content_id, verdict.revision)
        # Both read the store before any await: an appeal and its verdict processed
        # concurrently are answered once, by whichever of them is stored second.
        finals = self._finals(*revision)
        appeals = self._store.open_appeals(*revision)
        return finals + await self._appeal_verdicts(*revision, appeals)

    async def _appeal(self, record: InboundRecord) -> list[OutboundRecord]:
        appeal = decode_record(AppealEvent, record.value, "appeal")
        read_from = SourceRef(topic=record.topic, partition=record.partition, offset=record.offset)
        revision = (appeal.content_type, appeal.content_id, appeal.revision)
        self._store.add_appeal(appeal, read_from)
        # The first copy stored wins (its source and statement), and an appeal whose verdict
        # was read back is answered: nothing to do.
        stored = [
            (a, src) for a, src in self._store.open_appeals(*revision) if a.appeal_id == appeal.appeal_id
        ]
        return await self._appeal_verdicts(*revision, stored)

    async def _appeal_verdicts(
        self,
        content_type: str,
        content_id: str,
        revision: int,
        appeals: list[tuple[AppealEvent, SourceRef]],
    ) -> list[OutboundRecord]:
        """Appeal verdicts for these open appeals of the revision, once its live verdict is known.

        Answered again whenever a record of the revision is processed again (redelivery),
        until the appeal verdict is seen on the verdict topic: at least once, same key.
        """
        original = self._store.original_verdict(content_type, content_id, revision)
        if original is None or self._appeals is None or not appeals:
            return []  # kept; answered when the live verdict arrives
        topics = self._settings.topics
        outputs = []
        for appeal, read_from in appeals:
            verdict = await self._appeals.verdict(original, appeal, read_from)
            review = [topics.review] if verdict.decision == "review" else []
            outputs += verdict_records(verdict, topics.verdicts, *review)
        return outputs

    def _label(self, record: InboundRecord) -> list[OutboundRecord]:
        label = decode_record(LabelEvent, record.value, "label")
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
            outputs += verdict_records(final, self._settings.topics.verdicts)
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
    for source in (*get_args(LabelSource), *counts):
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

    def __init__(
        self, settings: Settings, store: QualityStore, metrics: QualityMetrics, policies: PolicySet
    ) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        # The pipeline's and the model client's own gauges and counters are the worker's; they
        # are not served here so that dashboards do not mistake this service for a worker.
        worker_metrics = create_worker_metrics(CollectorRegistry())
        quality = settings.quality
        inference = settings.inference
        if quality.appeal_model is not None:
            inference = inference.model_copy(update={"model": quality.appeal_model})
        self._model = InferenceClient(inference, worker_metrics)
        self._fetcher = KafkaContentFetcher(
            settings.kafka.bootstrap_servers,
            settings.kafka.client_id,
            timeout_seconds=quality.appeal_fetch_timeout_seconds,
        )
        appeals = AppealEvaluator(settings, policies, self._model, self._fetcher, metrics)
        self.processor = QualityProcessor(settings, store, metrics, appeals=appeals)
        kafka = settings.kafka.model_copy(update={"group_id": quality_group_id(settings)})
        self._pipeline = Pipeline(
            settings.model_copy(update={"kafka": kafka}),
            self.processor.process,
            worker_metrics,
            topics=consumed_topics(settings),
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
            await self._fetcher.close()
            await self._model.aclose()
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


def consumed_topics(settings: Settings) -> tuple[str, ...]:
    """The topics the quality service reads."""
    topics = settings.topics
    return (topics.verdicts, topics.shadow, topics.audit, topics.labels, topics.appeals)


def run_quality(settings: Settings, store: QualityStore, policies: PolicySet) -> None:
    """Serve /metrics and run the quality service until SIGTERM or Ctrl-C.

    ``policies``: the live packs appeals are re-evaluated with (read once, at start).
    """
    logging.basicConfig(
        level=settings.worker.log_level.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s"
    )
    registry = CollectorRegistry()
    metrics = create_quality(registry, consumed_topics=consumed_topics(settings))
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
        service = QualityService(settings, store, metrics, policies)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.stop)
        await service.run()

    try:
        asyncio.run(main())
    finally:
        store.close()
