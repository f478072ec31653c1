"""One input record in, its output records out: decode → prompt → score → decide.

No Kafka here: the Kafka edge (``worker.app``) hands records in and publishes what comes
back, so this logic is tested with a fake model server and no broker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from streamproc.config import Settings
from streamproc.decision import (
    Outcome,
    build_verdict,
    content_ref,
    decide,
    decide_by_rule,
    decide_on_error,
)
from streamproc.errors import DecodeError, InferenceError
from streamproc.metrics import Metrics
from streamproc.policy import SCORERS, ModelAnswer, ModelRequest, Policy, PolicySet, Scorer, item_content
from streamproc.policy.rules import CompiledRules, RuleHit, RuleOutcome
from streamproc.quality.sampling import audit_sample, drawn, shadow_key
from streamproc.schemas import (
    ContentEvent,
    ContentType,
    DeadLetterReason,
    SourceRef,
    TokenUsage,
    Verdict,
    VerdictMode,
    decode_event,
    encode,
)
from streamproc.worker.dlq import dead_letter
from streamproc.worker.records import InboundRecord, OutboundRecord, verdict_records

__all__ = ["ModelClient", "Processor", "decide_verdict", "evaluate"]

log = logging.getLogger(__name__)


class ModelClient(Protocol):
    """What the processor needs from the model server (InferenceClient in production)."""

    async def complete(self, request: ModelRequest) -> ModelAnswer: ...


class Processor:
    """Turns records from the content topics into verdict, review and dead-letter records."""

    def __init__(
        self,
        settings: Settings,
        policies: PolicySet,
        model: ModelClient,
        metrics: Metrics,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        #: Replaced as a whole on reload; each item reads it once, so it sees one version.
        self.policies = policies
        self._model = model
        self._metrics = metrics
        self._clock = clock
        topics = settings.topics
        self._content_types: dict[str, ContentType] = {
            topics.listings: "listing",
            topics.videos: "video",
        }

    def replace_policies(self, policies: PolicySet) -> None:
        """Serve new packs from the next item on (items in flight finish on the old ones)."""
        self.policies = policies

    async def process(self, record: InboundRecord) -> list[OutboundRecord]:
        """Never raises for bad input, model failures or bugs: they become records too.

        An unexpected error is dead-lettered as ``internal_error`` rather than raised: one
        bad item must not stop the worker and hold up every partition behind it.
        """
        self._metrics.events_consumed.labels(topic=record.topic).inc()
        try:
            return await self._process(record)
        except DecodeError as exc:
            log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc)
            return [self._dead_letter(record, exc.kind, exc)]  # type: ignore[arg-type]
        except Exception as exc:
            log.exception("internal error on %s[%d]@%d", record.topic, record.partition, record.offset)
            return [self._dead_letter(record, "internal_error", exc)]

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

    async def _process(self, record: InboundRecord) -> list[OutboundRecord]:
        received = time.perf_counter()
        topics = self._settings.topics
        content_type = self._content_types[record.topic]
        event = decode_event(content_type, record.value)
        policies = self.policies  # one set for the whole item, even if a reload lands meanwhile
        source = SourceRef(topic=record.topic, partition=record.partition, offset=record.offset)

        policy = policies.select(event)
        shadows = _sampled_shadows(policies, event, policy)
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

        self._metrics.verdicts.labels(
            content_type=content_type, decision=verdict.decision, category=_category_label(outcome)
        ).inc()
        self._metrics.end_to_end_latency.labels(content_type=content_type).observe(
            max(0.0, verdict.latency.end_to_end_seconds)
        )
        self._metrics.processing_latency.labels(content_type=content_type).observe(
            verdict.latency.processing_seconds
        )

        outputs = verdict_records(
            verdict, topics.verdicts, *([topics.review] if verdict.decision == "review" else [])
        )
        sample = audit_sample(verdict, policy, self._settings.audit)
        if sample is not None:
            self._metrics.audit_samples.labels(decision=verdict.decision).inc()
            on_verdicts = outputs[0]  # the audit record is keyed and headed as the verdict
            outputs.append(OutboundRecord(topics.audit, on_verdicts.key, encode(sample), on_verdicts.headers))
        for shadow in shadow_verdicts:  # never to the verdict, review or audit topics
            name = shadow.policy_version.partition("@")[0]
            self._metrics.shadow_verdicts.labels(policy=name, decision=shadow.decision).inc()
            agreed = "true" if shadow.decision == verdict.decision else "false"
            self._metrics.shadow_agreement.labels(policy=name, agreed=agreed).inc()
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
            model_name=self._settings.inference.model,
            source=source,
            received=received,
            clock=self._clock,
            mode=mode,
            metrics=self._metrics if mode == "live" else None,
        )

    async def _shadow_verdict(
        self, policies: PolicySet, policy: Policy, event: ContentEvent, source: SourceRef, received: float
    ) -> Verdict | None:
        """A candidate's verdict, or None when it failed: logged and counted, never raised."""
        try:
            verdict, _ = await self._verdict(policies, policy, event, source, received, mode="shadow")
        except Exception:
            log.exception("shadow pack %s failed on an item; the live verdict is unaffected", policy.name)
            self._metrics.shadow_failures.labels(policy=policy.name).inc()
            return None
        return verdict


async def evaluate(
    policy: Policy,
    rules: CompiledRules,
    event: ContentEvent,
    model: ModelClient,
    metrics: Metrics | None = None,
) -> tuple[Outcome, dict[str, float], list[ModelAnswer]]:
    """Pre-rules, then the model, then post-rules; an inference error is final.

    The decision path of the worker, shared with offline evaluation. Returns the outcome,
    the per-category scores (empty when a pre-rule decided or inference failed) and the
    model's answers. ``metrics`` is optional so that callers outside the worker can skip them.
    """
    scorer = SCORERS[policy.scorer]
    requests = scorer.requests(policy, item_content(policy, event))
    context = rules.context(event)  # built once, read by both stages
    hit = _first_hit(rules.evaluate_pre(event, context=context), policy)
    if hit is not None:
        if metrics is not None:
            metrics.rule_matches.labels(stage="pre", rule=hit.rule_id).inc()
            metrics.model_calls_saved.inc(len(requests))
        return _rule_outcome(policy, hit), {}, []
    if metrics is not None:
        metrics.model_requests_per_item.labels(scorer=scorer.name).observe(len(requests))
    answers: list[ModelAnswer] = []
    try:
        if len(requests) == 1:  # the common case, without gather's task per request
            answers = [await model.complete(requests[0])]
        else:
            answers = list(await asyncio.gather(*(model.complete(r) for r in requests)))
        if metrics is not None:
            metrics.completion_tokens_per_item.labels(scorer=scorer.name).observe(
                sum(a.completion_tokens for a in answers)
            )
        scores = _score(scorer, policy, answers, metrics)
    except InferenceError as exc:
        # Fail closed: counted, logged, escalated to a human; never an approval.
        log.warning("inference failed (%s): %s", policy.name, exc)
        return decide_on_error(exc.kind), {}, answers
    outcome = decide(policy, scores)
    hit = _first_hit(rules.evaluate_post(event, scores, outcome.decision, context=context), policy)
    if hit is not None:
        if metrics is not None:
            metrics.rule_matches.labels(stage="post", rule=hit.rule_id).inc()
        outcome = _rule_outcome(policy, hit)
    return outcome, scores, answers


async def decide_verdict(
    policy: Policy,
    rules: CompiledRules,
    event: ContentEvent,
    model: ModelClient,
    *,
    model_name: str,
    source: SourceRef,
    received: float,
    clock: Callable[[], datetime],
    mode: VerdictMode = "live",
    metrics: Metrics | None = None,
) -> tuple[Verdict, Outcome]:
    """``evaluate``, then the verdict built from it; ``received`` is the ``perf_counter()``
    reading its processing time runs from."""
    outcome, scores, answers = await evaluate(policy, rules, event, model, metrics)
    verdict = build_verdict(
        event=event,
        policy=policy,
        outcome=outcome,
        scores=scores,
        model=model_name,
        source=source,
        usage=_usage(answers),
        inference_seconds=max((a.seconds for a in answers), default=None),
        processing_seconds=time.perf_counter() - received,
        now=clock(),
        mode=mode,
    )
    return verdict, outcome


def _score(
    scorer: Scorer, policy: Policy, answers: list[ModelAnswer], metrics: Metrics | None
) -> dict[str, float]:
    if metrics is not None:
        for answer in answers:
            metrics.prompt_tokens.inc(answer.prompt_tokens)
            metrics.cached_prompt_tokens.inc(answer.cached_prompt_tokens or 0)
    try:
        return scorer.scores(policy, answers)
    except InferenceError as exc:  # an answer outside the expected format
        if metrics is not None:
            metrics.inference_errors.labels(kind=exc.kind).inc()
        raise


def _sampled_shadows(policies: PolicySet, event: ContentEvent, live: Policy) -> tuple[Policy, ...]:
    """The shadow packs this item runs through: a stable draw per item revision and version."""
    _, content_id = content_ref(event)
    return tuple(
        p
        for p in policies.shadows(event, live)
        if drawn(shadow_key(content_id, event.revision, p.version), p.shadow_sample)
    )


def _usage(answers: list[ModelAnswer]) -> TokenUsage | None:
    if not answers:
        return None
    cached = [a.cached_prompt_tokens for a in answers if a.cached_prompt_tokens is not None]
    return TokenUsage(
        prompt_tokens=sum(a.prompt_tokens for a in answers),
        completion_tokens=sum(a.completion_tokens for a in answers),
        cached_prompt_tokens=sum(cached) if cached else None,
    )


def _first_hit(result: RuleOutcome, policy: Policy) -> RuleHit | None:
    # A rule that fails on one item (e.g. arithmetic on a null) did not match; say so.
    for error in result.errors:
        log.warning("rule %s of %s failed on an item: %s", error.rule_id, policy.name, error.message)
    return result.hit


def _rule_outcome(policy: Policy, hit: RuleHit) -> Outcome:
    return decide_by_rule(
        hit.rule_id, hit.decision, hit.reason_code, hit.seller_message, policy, hit.category
    )


def _category_label(outcome: Outcome) -> str:
    """The ``category`` label of the verdicts metric (bounded: category ids and three more)."""
    kind = outcome.decided_by.kind
    if kind == "category" and outcome.decided_by.id:
        return outcome.decided_by.id
    return {"error": "inference_error", "rule": "rule"}.get(kind, "none")
