"""The decision path: pre-rules, the model, thresholds, post-rules, then the verdict.

Shared by the worker, offline evaluation and appeal re-evaluation. No Kafka: the model
server is reached through a ``ModelClient`` (InferenceClient in production).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from streamproc.decision.thresholds import Outcome, decide, decide_by_rule, decide_on_error
from streamproc.decision.verdict import build_verdict
from streamproc.errors import InferenceError
from streamproc.inference.protocol import ModelAnswer, ModelRequest
from streamproc.metrics import NOOP, DecisionRecorder
from streamproc.policy import SCORERS, Policy, Scorer, item_content
from streamproc.policy.calibration import calibrated_scores
from streamproc.policy.rules import CompiledRules, RuleHit, RuleOutcome
from streamproc.schemas import ContentEvent, SourceRef, TokenUsage, Verdict, VerdictMode

__all__ = ["ModelClient", "decide_verdict", "evaluate"]

log = logging.getLogger(__name__)


class ModelClient(Protocol):
    """What the decision path needs from the model server (InferenceClient in production)."""

    async def complete(self, request: ModelRequest) -> ModelAnswer: ...


async def evaluate(
    policy: Policy,
    rules: CompiledRules,
    event: ContentEvent,
    model: ModelClient,
    metrics: DecisionRecorder = NOOP,
) -> tuple[Outcome, dict[str, float], list[ModelAnswer]]:
    """Pre-rules, then the model, then post-rules; an inference error is final.

    The decision path of the worker, shared with offline evaluation and appeals. Returns
    the outcome, the per-category scores (calibrated by the pack's ``calibration`` blocks;
    empty when a pre-rule decided or inference failed) and the model's answers.
    """
    scorer = SCORERS[policy.scorer]
    requests = scorer.requests(policy, item_content(policy, event))
    context = rules.context(event)  # built once, read by both stages
    hit = _first_hit(rules.evaluate_pre(event, context=context), policy)
    if hit is not None:
        metrics.pre_rule_matched(hit.rule_id, requests_saved=len(requests))
        return _rule_outcome(policy, hit), {}, []
    metrics.model_requests(scorer.name, len(requests))
    answers: list[ModelAnswer] = []
    try:
        if len(requests) == 1:  # the common case, without gather's task per request
            answers = [await model.complete(requests[0])]
        else:
            answers = list(await asyncio.gather(*(model.complete(r) for r in requests)))
        metrics.model_tokens(
            scorer.name,
            prompt=sum(a.prompt_tokens for a in answers),
            cached=sum(a.cached_prompt_tokens or 0 for a in answers),
            completion=sum(a.completion_tokens for a in answers),
        )
        scores = _score(scorer, policy, answers, metrics)
    except InferenceError as exc:
        # Fail closed: counted, logged, escalated to a human; never an approval.
        # While the circuit is open every item fails this way; the client logs that once.
        log.log(
            logging.DEBUG if exc.kind == "circuit_open" else logging.WARNING,
            "inference failed (%s): %s",
            policy.name,
            exc,
        )
        return decide_on_error(exc.kind), {}, answers
    outcome = decide(policy, scores)
    hit = _first_hit(rules.evaluate_post(event, scores, outcome.decision, context=context), policy)
    if hit is not None:
        metrics.post_rule_matched(hit.rule_id)
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
    metrics: DecisionRecorder = NOOP,
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
    scorer: Scorer, policy: Policy, answers: list[ModelAnswer], metrics: DecisionRecorder
) -> dict[str, float]:
    try:
        # Thresholds and post-rules read calibrated scores, as the pack's thresholds were fitted on.
        return calibrated_scores(policy, scorer.scores(policy, answers))
    except InferenceError as exc:  # an answer outside the expected format
        metrics.inference_error(exc.kind)
        raise


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
