"""What ``streamproc eval`` does: load packs and dataset, run them through a model server, report."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path

from streamproc.config import InferenceSettings
from streamproc.decision import ModelClient
from streamproc.errors import ConfigError, redact_url
from streamproc.evaluation.dataset import LabeledItem, check_categories, load_dataset
from streamproc.evaluation.report import (
    EvalReport,
    ReportContext,
    ServedModel,
    build_report,
    build_summary,
    summary_headlines,
    violation_headline,
    write_report,
    write_summary,
)
from streamproc.evaluation.runner import PackRun, offline_client, run_packs
from streamproc.policy import Policy, load_pack, model_roles

__all__ = ["EvalPlan", "WrittenReport", "check_cascade", "headlines", "plan_evaluation", "run_evaluation"]


@dataclass(frozen=True)
class EvalPlan:
    """Validated inputs: what will run, before any model call."""

    data: Path
    items: list[LabeledItem]
    #: One group per report: a pack alone, or a pack and the one it is compared with.
    groups: list[list[Policy]]
    out: Path

    @property
    def requests(self) -> int:
        """Item evaluations to run (an item counts once per pack of its content type)."""
        return sum(self._matching(p) for group in self.groups for p in group)

    def _matching(self, policy: Policy) -> int:
        return sum(1 for item in self.items if item.content_type == policy.content_type)

    def out_dir(self, group: list[Policy]) -> Path:
        """DIR for one report; DIR/<pack name> for each when several packs run alone."""
        return self.out if len(self.groups) == 1 else self.out / group[0].name


@dataclass(frozen=True)
class WrittenReport:
    """One report, as written into ``directory``."""

    directory: Path
    #: report.json, report.md and the PR-curve PNGs.
    files: list[Path]
    report: EvalReport


def plan_evaluation(policy_files: list[Path], data: Path, out: Path, compare: Path | None = None) -> EvalPlan:
    """Load and check everything a run needs.

    Raises:
        ConfigError: an invalid pack, dataset or combination, naming the problem and the fix.
    """
    if not policy_files:
        raise ConfigError("give a pack to evaluate with --policy PACK.yaml")
    if find_spec("matplotlib") is None:  # found now, not after minutes of model calls
        raise ConfigError(
            "the report's precision-recall curves need matplotlib, which is not installed; "
            "install it with: pip install 'streamproc[plots]'"
        )
    if compare is not None and len(policy_files) != 1:
        raise ConfigError("--compare compares with one pack; give exactly one --policy with it")
    packs = [load_pack(path) for path in policy_files]
    groups = [[pack] for pack in packs]
    if compare is not None:
        other = load_pack(compare)
        if other.content_type != packs[0].content_type:
            raise ConfigError(
                f"cannot compare {packs[0].name} ({packs[0].content_type} pack) with {other.name} "
                f"({other.content_type} pack); compare packs of one content type"
            )
        groups = [[packs[0], other]]
    names = [group[0].name for group in groups]
    if len(set(names)) != len(names):
        raise ConfigError(f"packs evaluated alone need distinct names (their report folders), got {names}")
    items = load_dataset(data)
    for group in groups:
        matching = [item for item in items if item.content_type == group[0].content_type]
        if not matching:
            raise ConfigError(
                f"{data} has no {group[0].content_type} items for pack {group[0].name}; "
                f'add lines with "content_type": "{group[0].content_type}"'
            )
        check_categories(data, matching, group)
    return EvalPlan(data, items, groups, out)


def run_evaluation(
    plan: EvalPlan,
    inference: InferenceSettings,
    *,
    on_done: Callable[[], None] | None = None,
    model: ModelClient | None = None,
    cascade: InferenceSettings | None = None,
    second: ModelClient | None = None,
    embedding: InferenceSettings | None = None,
) -> list[WrittenReport]:
    """Run every pack over its items through the server ``inference`` names; write the reports.

    The server is a running one (``inference.base_url`` serving ``inference.model``): starting
    one is the caller's business. ``model`` replaces the HTTP client (tests); otherwise the
    server is checked first.

    ``cascade`` names the cascade's second model (``second`` replaces its client in tests):
    packs with a ``cascade`` band then cascade as in the worker, and their reports show the
    cascade's cost and effect. ``embedding`` names the embedding server of packs with the
    embedding_probe scorer, when it is not ``inference``'s.

    Raises:
        ServerUnreachable: the server cannot be reached or does not serve the model.
        ConfigError: a second model is given but no pack has a cascade band.
    """
    if cascade is not None:
        check_cascade(plan)
    plan.out.mkdir(parents=True, exist_ok=True)
    runs = asyncio.run(_run(plan, (inference, embedding), model, on_done, (cascade, second)))
    # The server that scored: the embedding server when every pack reads embeddings.
    probes_only = not model_roles(p for group in plan.groups for p in group)[0]
    scored_by = embedding if embedding is not None and probes_only else inference
    context = ReportContext(
        dataset=str(plan.data),
        dataset_items=len(plan.items),
        model=scored_by.model,
        base_url=redact_url(scored_by.base_url),  # reports are shared: no credentials
        generated_at=datetime.now(UTC),
        cascade=ServedModel(name=cascade.model, base_url=redact_url(cascade.base_url)) if cascade else None,
    )
    written = []
    for group, group_runs in zip(plan.groups, runs, strict=True):
        directory = plan.out_dir(group)
        report = build_report(context, group_runs)
        written.append(WrittenReport(directory, write_report(directory, report), report))
    if len(written) > 1:  # several packs alone: all of them together beside their folders
        write_summary(plan.out, build_summary(plan.out, [(w.directory, w.report) for w in written]))
    return written


def check_cascade(plan: EvalPlan) -> None:
    """A second model needs a pack that says when to use it.

    Raises:
        ConfigError: no pack of the plan has a cascade block.
    """
    if not any(p.cascade for group in plan.groups for p in group):
        raise ConfigError(
            "--cascade-model needs a pack with a cascade block (cascade: {band: {low: 0.3, high: 0.7}}); "
            "none of the packs given has one"
        )


def headlines(out: Path, written: Sequence[WrittenReport]) -> list[str]:
    """The violation figures ``streamproc eval`` ends with: a line per pack, then all packs
    together and the summary's path when several packs ran alone."""
    if len(written) == 1:
        return [violation_headline(p.label, p.violation) for p in written[0].report.packs]
    summary = build_summary(out, [(w.directory, w.report) for w in written])
    return [*summary_headlines(summary), f"summary: {out / 'summary.md'}"]


async def _run(
    plan: EvalPlan,
    servers: tuple[InferenceSettings, InferenceSettings | None],
    model: ModelClient | None,
    on_done: Callable[[], None] | None,
    cascade: tuple[InferenceSettings | None, ModelClient | None],
) -> list[list[PackRun]]:
    packs = [p for group in plan.groups for p in group]
    async with (
        _client(*servers, model, model_roles(packs)) as first,
        _client(cascade[0], None, cascade[1], (True, False)) as second,
    ):
        return await _run_groups(plan, first, servers[0].max_inflight, on_done, second)


@contextlib.asynccontextmanager
async def _client(
    settings: InferenceSettings | None,
    embedding: InferenceSettings | None,
    model: ModelClient | None,
    roles: tuple[bool, bool],
) -> AsyncIterator[ModelClient | None]:
    """``model`` (tests), else an offline client of the servers named (none: no client)."""
    if model is not None or settings is None:
        yield model
        return
    async with offline_client(settings, embedding, roles) as client:
        yield client


async def _run_groups(
    plan: EvalPlan,
    model: ModelClient | None,
    concurrency: int,
    on_done: Callable[[], None] | None,
    second: ModelClient | None,
) -> list[list[PackRun]]:
    assert model is not None  # noqa: S101 - _client yields one when given settings
    policies = [policy for group in plan.groups for policy in group]
    results = iter(
        await run_packs(policies, plan.items, model, concurrency=concurrency, on_done=on_done, second=second)
    )
    return [
        [
            PackRun(
                policy, next(results), sum(1 for i in plan.items if i.content_type != policy.content_type)
            )
            for policy in group
        ]
        for group in plan.groups
    ]
