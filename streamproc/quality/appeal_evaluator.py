"""Re-evaluating an appealed revision: its original record read back from Kafka, decided by
the worker's decision path under the appeal policy (see streamproc.quality.appeals)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from streamproc.decision import ModelClient, decide_verdict
from streamproc.errors import DecodeError
from streamproc.metrics import QualityRecorder
from streamproc.policy import Policy, PolicySet
from streamproc.quality.appeals import AppealResult, appeal_policy, appeal_verdict, unavailable_verdict
from streamproc.quality.content_fetch import ContentFetcher, ContentUnavailable
from streamproc.schemas import AppealEvent, ContentEvent, SourceRef, Verdict, decode_event

__all__ = ["AppealEvaluator"]

log = logging.getLogger(__name__)


class AppealEvaluator:
    """Re-evaluates an appealed revision: its original record read back from Kafka, decided
    by the worker's decision path under the appeal policy (see streamproc.quality.appeals).

    Never raises for unreadable content or model failures: they become review verdicts.
    """

    def __init__(
        self,
        policies: PolicySet,
        model: ModelClient,
        fetcher: ContentFetcher,
        metrics: QualityRecorder,
        *,
        model_name: str,
        review_threshold: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._policies = policies
        self._model = model
        self._fetcher = fetcher
        self._metrics = metrics
        self._clock = clock
        self._threshold = review_threshold
        self.model_name = model_name
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
        self._metrics.appeal(result)
        log.info(
            "appeal %s of %s: %s (%s)", appeal.appeal_id, original.idempotency_key, result, verdict.decision
        )
        return verdict

    async def _content(self, original: Verdict) -> ContentEvent:
        """The appealed revision's content event, read back from where the worker read it."""
        where = original.source
        event = decode_event(original.content_type, await self._fetcher.fetch(where))
        if (event.content_type, event.content_id, event.revision) != (
            original.content_type,
            original.content_id,
            original.revision,
        ):
            raise ContentUnavailable(
                f"the record at {where.topic}[{where.partition}]@{where.offset} is "
                f"{event.content_type}:{event.content_id} revision {event.revision}, not the appealed one"
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
