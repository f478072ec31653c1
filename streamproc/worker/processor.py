"""One input record in, its output records out: decode → prompt → score → decide.

No Kafka here: the Kafka edge (``streamproc.stream.Pipeline``) hands records in and publishes what comes
back, so this logic is tested with a fake model server and no broker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from streamproc.config import AuditSettings, TopicSettings
from streamproc.decision import (
    ModelClient,
    Outcome,
    SecondModel,
    audit_sample,
    decide_verdict,
    sampled_shadows,
)
from streamproc.metrics import NOOP, WorkerRecorder
from streamproc.policy import Policy, PolicySet, uses_embeddings
from streamproc.schemas import (
    ContentEvent,
    ContentType,
    SourceRef,
    Verdict,
    VerdictMode,
    decode_event,
    encode,
)
from streamproc.stream import (
    Handler,
    InboundRecord,
    OutboundRecord,
    dead_lettering,
    too_large_letters,
    verdict_records,
)

__all__ = ["Processor"]

log = logging.getLogger(__name__)


class Processor:
    """Turns records from the content topics into verdict, review, audit, shadow and
    dead-letter records. ``process`` never raises for bad input, model failures or bugs:
    they become records too (see streamproc.stream.dead_lettering)."""

    def __init__(
        self,
        topics: TopicSettings,
        audit: AuditSettings,
        policies: PolicySet,
        model: ModelClient,
        metrics: WorkerRecorder,
        *,
        model_name: str,
        embedding_model_name: str | None = None,
        worker_id: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        second: SecondModel | None = None,
    ) -> None:
        self._topics = topics
        self._audit = audit
        #: Replaced as a whole on reload; each item reads it once, so it sees one version.
        self.policies = policies
        self._model = model
        self._model_name = model_name
        self._embedding_model_name = embedding_model_name or model_name  # embedding_probe packs
        self._second = second  # the cascade's second model, for packs with a cascade band
        self._metrics = metrics
        self._clock = clock
        self._content_types: dict[str, ContentType] = {topics.listings: "listing", topics.videos: "video"}
        self.process: Handler = dead_lettering(
            self._process, dlq_topic=topics.dlq, worker=worker_id, metrics=metrics, clock=clock
        )
        #: What the pipeline publishes when the broker refuses an item's outputs for their size.
        self.too_large = too_large_letters(
            dlq_topic=topics.dlq, worker=worker_id, metrics=metrics, clock=clock
        )

    def replace_policies(self, policies: PolicySet) -> None:
        """Serve new packs from the next item on (items in flight finish on the old ones)."""
        self.policies = policies

    async def _process(self, record: InboundRecord) -> list[OutboundRecord]:
        received = time.perf_counter()
        self._metrics.event_consumed(record.topic)
        topics = self._topics
        content_type = self._content_types[record.topic]
        event = decode_event(content_type, record.value)
        policies = self.policies  # one set for the whole item, even if a reload lands meanwhile
        source = SourceRef(topic=record.topic, partition=record.partition, offset=record.offset)

        policy = policies.select(event)
        shadows = sampled_shadows(policies, event, policy)
        live = self._verdict(policies, policy, event, source, received)
        if shadows:
            # Candidates run beside the live path on the same model client. _shadow_verdict
            # catches their failures, so only the live path can raise here; if it does, the
            # candidates are cancelled rather than left running.
            tasks = [
                asyncio.create_task(self._shadow_verdict(policies, p, event, source, received))
                for p in shadows
            ]
            try:
                verdict, outcome = await live
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            shadow_verdicts = [v for v in await asyncio.gather(*tasks) if v is not None]
        else:
            verdict, outcome = await live
            shadow_verdicts = []

        if event.created_at > verdict.produced_at:  # no tolerance: the verdict clamps at 0 alike
            self._metrics.clock_skew()
        self._metrics.verdict(
            content_type,
            verdict.decision,
            _category_label(outcome),
            end_to_end_seconds=verdict.latency.end_to_end_seconds,  # clamped at 0 by build_verdict
            processing_seconds=verdict.latency.processing_seconds,
        )

        outputs = verdict_records(
            verdict, topics.verdicts, *([topics.review] if verdict.decision == "review" else [])
        )
        sample = audit_sample(verdict, policy, self._audit)
        if sample is not None:
            self._metrics.audit_sampled(verdict.decision)
            on_verdicts = outputs[0]  # the audit record is keyed and headed as the verdict
            outputs.append(OutboundRecord(topics.audit, on_verdicts.key, encode(sample), on_verdicts.headers))
        for shadow in shadow_verdicts:  # never to the verdict, review or audit topics
            name = shadow.policy_version.partition("@")[0]
            self._metrics.shadow_verdict(name, shadow.decision, agreed=shadow.decision == verdict.decision)
            outputs += verdict_records(shadow, topics.shadow)
        return outputs

    async def _verdict(
        self,
        policies: PolicySet,
        policy: Policy,
        event: ContentEvent,
        source: SourceRef,
        received: float,
        mode: VerdictMode = "live",
    ) -> tuple[Verdict, Outcome]:
        # the live metrics (rule matches, tokens per item) stay about live decisions
        return await decide_verdict(
            policy,
            policies.rules(policy),
            event,
            self._model,
            model_name=self._embedding_model_name if uses_embeddings(policy) else self._model_name,
            source=source,
            received=received,
            clock=self._clock,
            mode=mode,
            metrics=self._metrics if mode == "live" else NOOP,
            second=self._second,
        )

    async def _shadow_verdict(
        self, policies: PolicySet, policy: Policy, event: ContentEvent, source: SourceRef, received: float
    ) -> Verdict | None:
        """A candidate's verdict, or None when it failed: logged and counted, never raised."""
        try:
            verdict, _ = await self._verdict(policies, policy, event, source, received, mode="shadow")
        except Exception:
            log.exception("shadow pack %s failed on an item; the live verdict is unaffected", policy.name)
            self._metrics.shadow_failed(policy.name)
            return None
        return verdict


def _category_label(outcome: Outcome) -> str:
    """The ``category`` label of the verdicts metric (bounded: category ids and three more)."""
    kind = outcome.decided_by.kind
    if kind == "category" and outcome.decided_by.id:
        return outcome.decided_by.id
    return {"error": "inference_error", "rule": "rule"}.get(kind, "none")
