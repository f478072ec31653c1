"""What ``streamproc eval`` does: load packs and dataset, run them through a model server, report."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from streamproc.config import InferenceSettings
from streamproc.decision import ModelClient
from streamproc.dev.devstack import VllmServer
from streamproc.errors import ConfigError
from streamproc.evaluation.dataset import LabeledItem, check_categories, load_dataset
from streamproc.evaluation.report import ReportContext, build_report, write_report
from streamproc.evaluation.runner import PackRun, check_server, run_packs
from streamproc.inference import InferenceClient
from streamproc.metrics import create
from streamproc.policy import Policy, load_pack

__all__ = ["EvalPlan", "EvalReport", "ModelServer", "plan_evaluation", "run_evaluation"]


@dataclass(frozen=True)
class ModelServer:
    """A running server (``base_url``) or one to start from a vLLM python and a model directory."""

    base_url: str | None
    model: str
    vllm_python: Path | None = None
    model_dir: Path | None = None


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
class EvalReport:
    directory: Path
    files: list[Path]
    runs: list[PackRun]


def plan_evaluation(policy_files: list[Path], data: Path, out: Path, compare: Path | None = None) -> EvalPlan:
    """Load and check everything a run needs.

    Raises:
        ConfigError: an invalid pack, dataset or combination, naming the problem and the fix.
    """
    if not policy_files:
        raise ConfigError("give a pack to evaluate with --policy PACK.yaml")
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
    server: ModelServer,
    inference: InferenceSettings,
    *,
    on_done: Callable[[], None] | None = None,
    say: Callable[[str], None] = lambda _: None,
    model: ModelClient | None = None,
) -> list[EvalReport]:
    """Run every pack over its items and write the reports.

    ``model`` replaces the HTTP client (tests); otherwise the server is checked first.

    Raises:
        ConfigError: the server cannot be started or reached, or does not serve the model.
    """
    plan.out.mkdir(parents=True, exist_ok=True)
    with _server(server, plan.out, say) as base_url:
        settings = inference.model_copy(
            # An evaluation must finish: items the server fails on become errors, not a wait.
            update={"base_url": base_url, "model": server.model, "on_unavailable": "review"}
        )
        runs = asyncio.run(_run(plan, settings, model, on_done))
    context = ReportContext(
        dataset=str(plan.data),
        dataset_items=len(plan.items),
        model=server.model,
        base_url=base_url,
        generated_at=datetime.now(UTC),
    )
    reports = []
    for group, group_runs in zip(plan.groups, runs, strict=True):
        directory = plan.out_dir(group)
        files = write_report(directory, build_report(context, group_runs))
        reports.append(EvalReport(directory, files, group_runs))
    return reports


@contextlib.contextmanager
def _server(server: ModelServer, out: Path, say: Callable[[str], None]) -> Iterator[str]:
    if server.base_url is not None:
        yield server.base_url
        return
    if server.vllm_python is None or server.model_dir is None:
        raise ConfigError("give --vllm-python and --model-dir to start a model server, or --vllm-url")
    say(f"starting vLLM for {server.model_dir} (a few minutes on CPU; log in {out / 'vllm.log'}) …")
    with VllmServer(server.vllm_python, server.model_dir, server.model, out / "vllm.log") as running:
        say(f"model server {running.base_url} serving {server.model}")
        yield running.base_url


async def _run(
    plan: EvalPlan,
    settings: InferenceSettings,
    model: ModelClient | None,
    on_done: Callable[[], None] | None,
) -> list[list[PackRun]]:
    if model is None:
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        await check_server(settings.base_url, settings.model, api_key=api_key)
        async with InferenceClient(settings, create(CollectorRegistry())) as client:
            return await _run_groups(plan, client, settings.max_inflight, on_done)
    return await _run_groups(plan, model, settings.max_inflight, on_done)


async def _run_groups(
    plan: EvalPlan, model: ModelClient, concurrency: int, on_done: Callable[[], None] | None
) -> list[list[PackRun]]:
    policies = [policy for group in plan.groups for policy in group]
    results = iter(await run_packs(policies, plan.items, model, concurrency=concurrency, on_done=on_done))
    return [
        [
            PackRun(
                policy, next(results), sum(1 for i in plan.items if i.content_type != policy.content_type)
            )
            for policy in group
        ]
        for group in plan.groups
    ]
