"""The quality service's records: labels, audit samples, verdicts and appeals in; final
verdicts, appeal verdicts and dead letters out. Everything written for one record is one
store transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from streamproc.config import TopicSettings
from streamproc.errors import SchemaValidationError
from streamproc.metrics import QualityRecorder
from streamproc.quality.appeal_evaluator import AppealEvaluator
from streamproc.quality.join import check_label, final_verdict, settles
from streamproc.quality.store import QualityStore, StoreError
from streamproc.schemas import (
    AppealEvent,
    AuditSample,
    LabelEvent,
    SourceRef,
    Verdict,
    decode_record,
)
from streamproc.stream import (
    Handler,
    InboundRecord,
    OutboundRecord,
    dead_lettering,
    too_large_letters,
    verdict_records,
)

__all__ = ["QualityProcessor"]

log = logging.getLogger(__name__)


class QualityProcessor:
    """One record in, its outputs out: final verdicts, appeal verdicts and dead letters.

    ``process`` dead-letters bad records; store errors are raised: the item then stays
    uncommitted and the service stops, rather than losing a record. Everything written for
    one record is one transaction.
    """

    def __init__(
        self,
        topics: TopicSettings,
        store: QualityStore,
        metrics: QualityRecorder,
        *,
        worker_id: str,
        appeals: AppealEvaluator | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._topics = topics
        self._store = store
        self._metrics = metrics
        #: Without one, appeals are stored and left unanswered.
        self._appeals = appeals
        self._clock = clock
        #: Set when the store changed; the exported figures are recomputed then.
        self.dirty = True
        self.process: Handler = dead_lettering(
            self._process,
            dlq_topic=topics.dlq,
            worker=worker_id,
            metrics=metrics,
            fatal=(StoreError,),
            clock=clock,
        )
        #: What the pipeline publishes when the broker refuses an item's outputs for their size.
        self.too_large = too_large_letters(
            dlq_topic=topics.dlq, worker=worker_id, metrics=metrics, clock=clock
        )

    async def _process(self, record: InboundRecord) -> list[OutboundRecord]:
        self._metrics.record_consumed(record.topic)
        topics = self._topics
        if record.topic == topics.labels:
            return self._label(record)
        if record.topic == topics.appeals:
            return await self._appeal(record)
        if record.topic == topics.audit:
            self.dirty |= self._store.add_audit(decode_record(AuditSample, record.value, "audit sample"))
            return []
        verdict = decode_record(Verdict, record.value, "verdict")
        if record.topic == topics.shadow:
            if verdict.kind != "shadow":
                raise SchemaValidationError("a verdict on the shadow topic must have mode shadow")
            self.dirty |= self._store.add_verdict(verdict)
            return []
        return await self._verdict(verdict)

    async def _verdict(self, verdict: Verdict) -> list[OutboundRecord]:
        """A record of the verdict topic: automated, or one of ours read back."""
        match verdict.kind:
            case "appeal":  # ours, read back: never scored
                self._store.add_appeal_verdict(verdict)
                return []
            case "final":  # ours, read back
                self.dirty |= self._store.add_final(verdict)
                return []
            case "shadow":
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
        topics = self._topics
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
            self._metrics.final_verdict_published(label.source)
            outputs += verdict_records(final, self._topics.verdicts)
        return outputs
