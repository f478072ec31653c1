"""Run policy packs over labeled items through the worker's own decision path."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import httpx
import orjson

from streamproc.config import InferenceSettings
from streamproc.decision import Evaluation, ModelClient, decide, evaluate_item, flagged_categories
from streamproc.errors import ConfigError, redact_url
from streamproc.evaluation.dataset import LabeledItem
from streamproc.inference import ModelRouter, open_router
from streamproc.inference.protocol import ModelAnswer, ModelRequest
from streamproc.metrics import NOOP
from streamproc.policy import Policy
from streamproc.policy.rules import CompiledRules
from streamproc.schemas import Decision

__all__ = [
    "OFFLINE_TIMEOUT_SECONDS",
    "RULE_WITHOUT_CATEGORY",
    "ItemResult",
    "PackRun",
    "ServerUnreachable",
    "check_server",
    "offline_client",
    "run_packs",
]

#: A measurement, not a service: a request may wait this long in a busy server's queue (a CPU
#: server answers a few items a second while hundreds are in flight) rather than time out and
#: leave its item unscored.
OFFLINE_TIMEOUT_SECONDS = 600.0

#: The predicted class of an item that a rule rejected or escalated without naming a category.
RULE_WITHOUT_CATEGORY = "(rule)"

_START_HINT = (
    "start one with `make eval` (it starts a local vLLM server and runs this command), pass "
    "--vllm-python PY --model-dir DIR to let this command start one, or point --vllm-url at a "
    "running OpenAI-compatible server"
)


def _offline(settings: InferenceSettings) -> InferenceSettings:
    """Patient (see OFFLINE_TIMEOUT_SECONDS) and never holding: a server down fails its
    items at once, so a run always finishes."""
    timeout = max(settings.timeout_seconds, OFFLINE_TIMEOUT_SECONDS)
    return settings.model_copy(update={"timeout_seconds": timeout, "on_unavailable": "review"})


@contextlib.asynccontextmanager
async def offline_client(
    generative: InferenceSettings, embedding: InferenceSettings | None, roles: tuple[bool, bool]
) -> AsyncIterator[ModelRouter]:
    """The model client of eval, calibrate and train: the servers the run asks (``roles``,
    generative and embedding, as ``model_roles`` says of packs) checked first (``embedding``
    None: the generative server answers embeddings too), then one offline client each."""
    needs_generative, needs_embedding = roles
    for server, needed in ((generative, needs_generative or embedding is None), (embedding, needs_embedding)):
        if server is not None and needed:
            api_key = server.api_key.get_secret_value() if server.api_key else None
            await check_server(server.base_url, server.model, api_key=api_key)
    async with open_router(_offline(generative), _offline(embedding) if embedding else None, NOOP) as client:
        yield client


class ServerUnreachable(ConfigError):
    """The model server cannot be reached or does not serve the model."""


@dataclass(frozen=True)
class ItemResult:
    """What one pack decided for one item."""

    item: LabeledItem
    decision: Decision
    #: category, rule, error or none, as in a verdict's ``decided_by``.
    decided_by: str
    decided_by_id: str | None
    reason_code: str
    scores: dict[str, float]
    flagged: tuple[str, ...]
    #: The rule's category, when a rule decided and named one.
    rule_category: str | None = None
    #: The deciding rule's stage: ``pre`` (before the model, no model call) or ``post`` (it
    #: replaced the model's decision); None when no rule decided.
    rule_stage: Literal["pre", "post"] | None = None
    #: What the model's scores alone decided (thresholds, before post-rules); None when the
    #: model did not score the item.
    model_decision: Decision | None = None
    #: Model requests answered for the item, and their usage as the server reported it.
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: The cascade: requests sent to the second model (0: the item did not cascade), and
    #: what the first model alone decided, scored alongside.
    second_model_requests: int = 0
    without_cascade: ItemResult | None = None

    @property
    def error(self) -> str | None:
        """The inference error kind, when the model could not score the item."""
        return self.decided_by_id if self.decided_by == "error" else None

    @property
    def scored(self) -> bool:
        """The model scored the item (no pre-rule decided it, no inference error)."""
        return self.error is None and bool(self.scores)

    @property
    def predicted_class(self) -> str:
        """The deciding category (its rule's, else the first flagged), or ``none``."""
        if self.decision == "approve":
            return "none"
        if self.decided_by == "category" and self.decided_by_id:
            return self.decided_by_id
        if self.rule_category:
            return self.rule_category
        if self.flagged:
            return self.flagged[0]
        return RULE_WITHOUT_CATEGORY

    @property
    def rules_only_decision(self) -> Decision:
        """The decision without the model: a rule's (pre or post), else approve."""
        return self.decision if self.decided_by == "rule" else "approve"

    @property
    def flagged_by_model(self) -> bool:
        """The model's categories held the item back, no rule deciding."""
        return self.decided_by == "category" and self.decision != "approve"


@dataclass(frozen=True)
class PackRun:
    """A pack's results over the items of its content type, in dataset order."""

    policy: Policy
    results: list[ItemResult]
    #: Dataset items of the other content type, not evaluated by this pack.
    skipped: int

    @property
    def errors(self) -> list[ItemResult]:
        return [r for r in self.results if r.error is not None]

    @property
    def evaluated(self) -> list[ItemResult]:
        """Results the metrics count: every item but those inference failed on."""
        return [r for r in self.results if r.error is None]


async def check_server(base_url: str, model: str, *, api_key: str | None = None) -> None:
    """Fail early, with how to start one, when the server is down or does not serve ``model``.

    Raises:
        ServerUnreachable: naming the URL (and the served models, when the name is wrong).
    """
    url = base_url.rstrip("/") + "/models"
    shown, shown_url = redact_url(base_url), redact_url(url)
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0)) as client:
            response = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise ServerUnreachable(
            f"no model server answers at {shown} ({type(exc).__name__}: {exc or 'no detail'}); {_START_HINT}"
        ) from exc
    if response.status_code != httpx.codes.OK:
        raise ServerUnreachable(
            f"GET {shown_url} answered HTTP {response.status_code}, not an OpenAI-compatible model list; "
            f"{_START_HINT}"
        )
    try:
        served = [entry["id"] for entry in response.json()["data"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ServerUnreachable(
            f"GET {shown_url} did not return an OpenAI model list; {_START_HINT}"
        ) from exc
    if model not in served:
        raise ServerUnreachable(
            f"the server at {shown} does not serve model {model!r} (it serves {served}); "
            "pass --model-name with one of those, or set inference.model in the settings"
        )


class _AskedOnce:
    """A model client that sends each distinct request once: packs compared on the same item
    ask the same questions where they share a scorer and its texts (a candidate that moves
    thresholds or rules, any two probe packs on one backbone). Each pack's result still
    carries every answer it asked for, so its figures say what it would cost alone."""

    def __init__(self, model: ModelClient) -> None:
        self._model = model
        self._asked: dict[bytes, asyncio.Task[ModelAnswer]] = {}

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        key = orjson.dumps([request.endpoint, request.body], option=orjson.OPT_SORT_KEYS)
        if key not in self._asked:
            self._asked[key] = asyncio.ensure_future(self._model.complete(request))
        return await self._asked[key]


async def run_packs(
    policies: Sequence[Policy],
    items: Sequence[LabeledItem],
    model: ModelClient,
    *,
    concurrency: int,
    on_done: Callable[[], None] | None = None,
    second: ModelClient | None = None,
) -> list[list[ItemResult]]:
    """Every pack over the items of its content type, at most ``concurrency`` items at once;
    the packs of one item run together and send the requests they share once.

    Returns one list per pack, in dataset order. Inference errors become results (decided
    by ``error``), never exceptions; other exceptions propagate. With a ``second`` model,
    packs with a ``cascade`` band cascade as in the worker.
    """
    compiled = [CompiledRules.compile(policy) for policy in policies]
    stages = [{rule.id: rule.stage for rule in policy.rules} for policy in policies]
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, item: LabeledItem, first: ModelClient, then: ModelClient | None) -> ItemResult:
        result = await evaluate_item(policies[index], compiled[index], item.event, first, second=then)
        if on_done is not None:
            on_done()
        return _item_result(policies[index], item, stages[index], result)

    packs_of = {
        kind: [i for i, policy in enumerate(policies) if policy.content_type == kind]
        for kind in {item.content_type for item in items}
    }

    async def every_pack(item: LabeledItem) -> list[tuple[int, ItemResult]]:
        # Answers shared for this item only: nothing is kept once its packs have decided.
        indexes = packs_of[item.content_type]
        first = _AskedOnce(model) if len(indexes) > 1 else model
        then = _AskedOnce(second) if second is not None and len(indexes) > 1 else second
        async with gate, asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(index, item, first, then)) for index in indexes]
        return [(index, task.result()) for index, task in zip(indexes, tasks, strict=True)]

    async with asyncio.TaskGroup() as group:
        runs = [group.create_task(every_pack(item)) for item in items]
    results: list[list[ItemResult]] = [[] for _ in policies]
    for run in runs:
        for index, result in run.result():
            results[index].append(result)
    return results


def _item_result(
    policy: Policy, item: LabeledItem, stages: dict[str, Literal["pre", "post"]], result: Evaluation
) -> ItemResult:
    outcome, scores, answers = result.outcome, result.scores, result.answers
    rule_id = outcome.decided_by.id if outcome.decided_by.kind == "rule" else None
    mine = ItemResult(
        item=item,
        decision=outcome.decision,
        decided_by=outcome.decided_by.kind,
        decided_by_id=outcome.decided_by.id,
        reason_code=outcome.reason_code,
        scores=dict(scores),
        flagged=tuple(flagged_categories(policy, outcome, scores)),
        rule_category=outcome.rule_category,
        rule_stage=stages.get(rule_id) if rule_id else None,
        # The thresholds again: a post-rule's outcome hides what the model decided.
        model_decision=decide(policy, scores).decision if scores else None,
        requests=len(answers),
        prompt_tokens=sum(a.prompt_tokens for a in answers),
        completion_tokens=sum(a.completion_tokens for a in answers),
    )
    if result.first is None:
        return mine
    first_answers = answers[: len(answers) - result.second_answers]
    alone = _item_result(policy, item, stages, Evaluation(*result.first, first_answers))
    return dataclasses.replace(mine, second_model_requests=result.second_requests, without_cascade=alone)
