"""The decision path: pre-rules, the model, thresholds, post-rules, then the verdict.

Shared by the worker, offline evaluation and appeal re-evaluation. No Kafka: the model
server is reached through a ``ModelClient`` (InferenceClient in production).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from streamproc.decision.explain import WindowScores, explain
from streamproc.decision.thresholds import (
    Outcome,
    decide,
    decide_by_rule,
    decide_on_error,
    decide_on_rule_error,
)
from streamproc.decision.verdict import build_verdict
from streamproc.errors import InferenceError, safe_text
from streamproc.inference.protocol import ModelAnswer, ModelRequest
from streamproc.metrics import NOOP, DecisionRecorder
from streamproc.policy import SCORERS, ItemWindows, Policy, Scorer, item_windows
from streamproc.policy.calibration import calibrated_scores, second_opinion_scores
from streamproc.policy.rule_match import RuleSpan
from streamproc.policy.rules import CompiledRules, RuleHit, RuleOutcome
from streamproc.schemas import ContentEvent, SourceRef, TokenUsage, Verdict, VerdictMode

__all__ = [
    "Evaluation",
    "ModelClient",
    "SecondModel",
    "decide_scored",
    "decide_verdict",
    "evaluate",
    "evaluate_item",
]

log = logging.getLogger(__name__)


class ModelClient(Protocol):
    """What the decision path needs from the model server (InferenceClient in production)."""

    async def complete(self, request: ModelRequest) -> ModelAnswer: ...


@dataclass(frozen=True)
class SecondModel:
    """The cascade's second model: its client and the served name its verdicts record."""

    client: ModelClient
    name: str


@dataclass(frozen=True)
class Evaluation:
    """What the decision path made of one item."""

    outcome: Outcome
    #: The deciding scores, calibrated (empty when a pre-rule decided or inference failed).
    scores: dict[str, float]
    #: Every answer: the first model's, then the second model's when the item cascaded.
    answers: list[ModelAnswer]
    #: When the item cascaded: what the first model alone decided, and its scores.
    first: tuple[Outcome, dict[str, float]] | None = None
    #: Requests sent to the second model, and its answers (the last ones of ``answers``;
    #: fewer than its requests when it failed).
    second_requests: int = 0
    second_answers: int = 0
    #: The item's fields the model did not read in full (``ItemWindows.clipped``).
    clipped: tuple[str, ...] = ()
    #: The deciding model's raw scores per window, in window order (empty when it gave none).
    windows: tuple[WindowScores, ...] = ()
    #: Where the deciding rule matched the item, when a rule decided and its form can say.
    span: RuleSpan | None = None

    @property
    def cascaded(self) -> bool:
        return self.first is not None


async def evaluate(
    policy: Policy,
    rules: CompiledRules,
    event: ContentEvent,
    model: ModelClient,
    metrics: DecisionRecorder = NOOP,
    second: ModelClient | None = None,
) -> tuple[Outcome, dict[str, float], list[ModelAnswer]]:
    """Pre-rules, then the model, then post-rules; an inference error is final.

    The decision path of the worker, shared with offline evaluation and appeals. Returns
    the outcome, the per-category scores (calibrated by the pack's ``calibration`` blocks;
    empty when a pre-rule decided or inference failed) and the model's answers. With a
    ``second`` model and a pack ``cascade`` band, see ``evaluate_item``.
    """
    result = await evaluate_item(policy, rules, event, model, metrics, second)
    return result.outcome, result.scores, result.answers


async def evaluate_item(
    policy: Policy,
    rules: CompiledRules,
    event: ContentEvent,
    model: ModelClient,
    metrics: DecisionRecorder = NOOP,
    second: ModelClient | None = None,
) -> Evaluation:
    """``evaluate``, saying whether the item cascaded: when the pack has a ``cascade`` band,
    a ``second`` model is given and some calibrated score of the first model is in the band,
    the second model is asked (as the cascade's scorer asks, else with the same requests) and
    its calibrated scores decide. Its failure fails closed as the first model's does: review,
    counted."""
    scorer = SCORERS[policy.scorer]
    windows = item_windows(policy, event)
    requests = _requests(scorer, policy, windows)
    context = rules.context(event, windows.clipped)  # built once, read by both stages
    pre = rules.evaluate_pre(event, context=context)
    if pre.hit is not None or pre.errors:  # a pre rule that failed may have been the one to match
        if pre.hit is not None:
            metrics.pre_rule_matched(pre.hit.rule_id, requests_saved=_count(requests))
            outcome = _rule_outcome(policy, pre.hit)
        else:
            outcome = decide_on_rule_error(pre.errors[0].rule_id)
        outcome = _checked(policy, outcome, pre, metrics)
        return Evaluation(outcome, {}, [], span=_span(rules, outcome, context))
    metrics.model_requests(scorer.name, _count(requests))
    answers: list[ModelAnswer] = []
    try:
        scores, by_window = await _model_scores(scorer, policy, requests, model, metrics, answers)
    except InferenceError as exc:
        return Evaluation(_failed(policy, exc), {}, answers, clipped=windows.clipped)
    if second is None or policy.cascade is None or not policy.cascade.uncertain(scores):
        outcome = _model_outcome(policy, rules, event, scores, context, metrics)
        return Evaluation(
            outcome,
            scores,
            answers,
            clipped=windows.clipped,
            windows=_window_scores(windows, by_window),
            span=_span(rules, outcome, context),
        )
    # What the first model alone decided: offline evaluation reports it beside the cascade.
    first = (_model_outcome(policy, rules, event, scores, context, NOOP), scores)
    if policy.cascade.scorer is not None and policy.cascade.scorer != scorer.name:
        scorer = SCORERS[policy.cascade.scorer]
        requests = _requests(scorer, policy, windows)
    return await _cascade(
        policy, rules, event, (scorer, requests), windows, context, second, metrics, answers, first
    )


async def _cascade(
    policy: Policy,
    rules: CompiledRules,
    event: ContentEvent,
    asking: tuple[Scorer, list[list[ModelRequest]]],
    windows: ItemWindows,
    context: Mapping[str, Any],
    second: ModelClient,
    metrics: DecisionRecorder,
    answers: list[ModelAnswer],
    first: tuple[Outcome, dict[str, float]],
) -> Evaluation:
    """The second model decides an item the first found uncertain (``first``: what it decided),
    asked with ``asking``'s scorer and requests."""
    scorer, requests = asking
    metrics.cascaded(policy.name, requests=_count(requests))
    second_answers: list[ModelAnswer] = []
    try:
        scores, by_window = await _model_scores(
            scorer, policy, requests, second, metrics, second_answers, second=True
        )
    except InferenceError as exc:
        outcome, scores, by_window = _failed(policy, exc), {}, []
    else:
        outcome = _model_outcome(policy, rules, event, scores, context, metrics)
    answers += second_answers
    return Evaluation(
        outcome,
        scores,
        answers,
        first,
        _count(requests),
        len(second_answers),
        windows.clipped,
        _window_scores(windows, by_window),
        _span(rules, outcome, context),
    )


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
    second: SecondModel | None = None,
) -> tuple[Verdict, Outcome]:
    """``evaluate``, then the verdict built from it; ``received`` is the ``perf_counter()``
    reading its processing time runs from. A cascaded item's verdict names the second model."""
    result = await evaluate_item(
        policy, rules, event, model, metrics, second.client if second is not None else None
    )
    verdict = build_verdict(
        event=event,
        policy=policy,
        outcome=result.outcome,
        scores=result.scores,
        model=second.name if second is not None and result.cascaded else model_name,
        source=source,
        usage=_usage(result.answers),
        inference_seconds=_inference_seconds(result),
        processing_seconds=time.perf_counter() - received,
        now=clock(),
        mode=mode,
        clipped=result.clipped,
        explanation=explain(policy, result.outcome, result.scores, windows=result.windows, span=result.span),
    )
    return verdict, result.outcome


def decide_scored(
    policy: Policy,
    rules: CompiledRules,
    event: ContentEvent,
    scores: Mapping[str, float],
    clipped: tuple[str, ...] = (),
) -> Outcome:
    """What ``evaluate_item`` decides from deciding scores the model gave before (its
    ``scores`` and ``clipped``): thresholds, then post-rules, with no model call. A threshold
    sweep over stored scores decides as a run at those thresholds would."""
    context = rules.context(event, clipped)
    return _model_outcome(policy, rules, event, dict(scores), context, NOOP)


def _requests(scorer: Scorer, policy: Policy, windows: ItemWindows) -> list[list[ModelRequest]]:
    """The scorer's requests for each window of the item."""
    return [scorer.requests(policy, window) for window in windows.windows]


def _count(requests: list[list[ModelRequest]]) -> int:
    return sum(len(group) for group in requests)


async def _model_scores(
    scorer: Scorer,
    policy: Policy,
    requests: list[list[ModelRequest]],
    model: ModelClient,
    metrics: DecisionRecorder,
    answers: list[ModelAnswer],
    *,
    second: bool = False,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The model's calibrated scores over the item's windows (the cascade's calibration for the
    ``second`` model), and its raw scores per window; its answers go into ``answers`` (kept
    when scoring fails)."""
    flat = [request for group in requests for request in group]
    if len(flat) == 1:  # the common case, without gather's task per request
        answers.append(await model.complete(flat[0]))
    else:
        answers += await asyncio.gather(*(model.complete(r) for r in flat))
    metrics.model_tokens(
        scorer.name,
        prompt=sum(a.prompt_tokens for a in answers),
        cached=sum(a.cached_prompt_tokens or 0 for a in answers),
        completion=sum(a.completion_tokens for a in answers),
    )
    by_window, start = [], 0
    for group in requests:
        by_window.append(answers[start : start + len(group)])
        start += len(group)
    return _score(scorer, policy, by_window, metrics, second)


def _failed(policy: Policy, exc: InferenceError) -> Outcome:
    # Fail closed: counted, logged, escalated to a human; never an approval.
    # While the circuit is open every item fails this way; the client logs that once.
    log.log(
        logging.DEBUG if exc.kind == "circuit_open" else logging.WARNING,
        "inference failed (%s): %s",
        policy.name,
        exc,
    )
    return decide_on_error(exc.kind)


def _model_outcome(
    policy: Policy,
    rules: CompiledRules,
    event: ContentEvent,
    scores: dict[str, float],
    context: Mapping[str, Any],
    metrics: DecisionRecorder,
) -> Outcome:
    """The thresholds over the scores, then the post-rules."""
    outcome = decide(policy, scores)
    post = rules.evaluate_post(event, scores, outcome.decision, context=context)
    if post.hit is not None:
        metrics.post_rule_matched(post.hit.rule_id)
        outcome = _rule_outcome(policy, post.hit)
    return _checked(policy, outcome, post, metrics)


def _inference_seconds(result: Evaluation) -> float | None:
    """The slowest answer of each model asked, added up (the second model is asked after)."""
    split = len(result.answers) - result.second_answers
    stages = [result.answers[:split], result.answers[split:]]
    seconds = [max(a.seconds for a in stage) for stage in stages if stage]
    return sum(seconds) if seconds else None


def _score(
    scorer: Scorer,
    policy: Policy,
    by_window: list[list[ModelAnswer]],
    metrics: DecisionRecorder,
    second: bool,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Each category's highest raw score over the windows (the worst part of the item decides),
    calibrated: calibrations are increasing, so this is also the highest calibrated score; and
    each window's raw scores (which window decided, for the explanation)."""
    calibrate = second_opinion_scores if second else calibrated_scores
    try:
        per_window = [scorer.scores(policy, answers) for answers in by_window]
        raw: dict[str, float] = {}
        for window in per_window:
            for category, score in window.items():
                raw[category] = max(score, raw.get(category, score))
        # Thresholds and post-rules read calibrated scores, as the pack's thresholds were fitted on.
        return calibrate(policy, raw), per_window
    except InferenceError as exc:  # an answer outside the expected format
        metrics.inference_error(exc.kind)
        raise


def _window_scores(windows: ItemWindows, by_window: list[dict[str, float]]) -> tuple[WindowScores, ...]:
    """Each window's scores beside what it reads; none when scoring failed."""
    if not by_window:
        return ()
    return tuple(WindowScores(s, w.covers) for s, w in zip(by_window, windows.windows, strict=True))


def _span(rules: CompiledRules, outcome: Outcome, context: Mapping[str, Any]) -> RuleSpan | None:
    """Where the deciding rule matched, when a rule decided."""
    if outcome.decided_by.kind != "rule" or outcome.decided_by.id is None:
        return None
    return rules.span(outcome.decided_by.id, context)


def _usage(answers: list[ModelAnswer]) -> TokenUsage | None:
    if not answers:
        return None
    cached = [a.cached_prompt_tokens for a in answers if a.cached_prompt_tokens is not None]
    return TokenUsage(
        prompt_tokens=sum(a.prompt_tokens for a in answers),
        completion_tokens=sum(a.completion_tokens for a in answers),
        cached_prompt_tokens=sum(cached) if cached else None,
    )


def _checked(policy: Policy, outcome: Outcome, rules: RuleOutcome, metrics: DecisionRecorder) -> Outcome:
    """``outcome``, unless a rule tried before the deciding one failed on the item (it may have
    been the one to match): then never an approval. Fails closed as inference errors do: the
    item goes to review, counted and logged; a stricter outcome stands."""
    for error in rules.errors:
        metrics.rule_failed(error.stage, error.rule_id)
        # The message may quote the item's data: escaped and bounded.
        log.warning(
            "rule %s of %s failed on an item: %s", error.rule_id, policy.name, safe_text(error.message)
        )
    if rules.errors and outcome.decision == "approve":
        return decide_on_rule_error(rules.errors[0].rule_id)
    return outcome


def _rule_outcome(policy: Policy, hit: RuleHit) -> Outcome:
    return decide_by_rule(
        hit.rule_id, hit.decision, hit.reason_code, hit.seller_message, policy, hit.category
    )
