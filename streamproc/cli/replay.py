"""`streamproc replay` and `replay-sweep`: candidate packs over past traffic, against the
verdicts it actually got."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from streamproc.cli.common import BootstrapServers, config_option, load, quiet_kafka_client
from streamproc.cli.model_server import (
    CascadeOptions,
    ServerOptions,
    cascade_options,
    model_servers,
    server_options,
)
from streamproc.errors import ConfigError

if TYPE_CHECKING:
    from streamproc.config import InferenceSettings, Settings
    from streamproc.evaluation.replay import (
        ReplayPlan,
        ReplayProgress,
        ReplayReport,
        ReplayRequest,
        SweepAxis,
        ThresholdSet,
    )
    from streamproc.evaluation.replay.labels import Labels
    from streamproc.evaluation.replay.report import PackReport
    from streamproc.policy import Policy
    from streamproc.stream.time_range import KafkaRangeReader

__all__ = ["Duration", "IsoTime", "SweepSpec", "replay", "replay_sweep"]

_DURATION = re.compile(r"^(?P<amount>\d+(?:\.\d+)?)(?P<unit>[smhd])$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PATH = click.Path(path_type=Path, exists=True, dir_okay=False)

if TYPE_CHECKING:
    _Param = click.ParamType[Any, Any]  # generic in recent click only
else:
    _Param = click.ParamType


class IsoTime(_Param):
    """An ISO 8601 time; without an offset it is UTC."""

    name = "ISO-TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time such as 2024-05-01T00:00:00Z", param, ctx)
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Duration(_Param):
    """``90s``, ``30m``, ``6h`` or ``2d``."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = _DURATION.match(str(value).strip())
        if match is None:
            self.fail(f"{value!r} is not a duration such as 90s, 30m, 6h or 2d", param, ctx)
        return timedelta(seconds=float(match["amount"]) * _UNIT_SECONDS[match["unit"]])


class SweepSpec(_Param):
    """``CATEGORY.reject=V[,V…]`` or ``CATEGORY.review=V[,V…]``."""

    name = "CATEGORY.reject=V[,V...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> SweepAxis:
        from streamproc.evaluation.replay import SweepAxis, parse_axis  # noqa: PLC0415

        if isinstance(value, SweepAxis):
            return value
        try:
            return parse_axis(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


_LABELS_HELP = (
    "Labeled dataset (JSONL, as `streamproc export-labels` writes or `streamproc eval` reads): adds "
    "violation precision, recall and F1 of live and candidate over the labeled items."
)
_SWEEP_HELP = (
    "Thresholds to try on the stored scores, no model call: CATEGORY.reject=0.8,0.85,0.9 (or "
    ".review=); repeat for several thresholds (every combination); tables per set in sweep.md."
)


@click.command()
@config_option
@click.option(
    "--policy",
    "policy_files",
    multiple=True,
    required=True,
    type=_PATH,
    help="Candidate pack (repeat for several: each replays the items of its content type and verticals).",
)
@click.option(
    "--from",
    "from_time",
    required=True,
    type=IsoTime(),
    help="Start of the traffic to replay (ISO 8601; UTC without an offset).",
)
@click.option("--to", "to_time", required=True, type=IsoTime(), help="End of the traffic (excluded).")
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Report and checkpoint folder; rerunning with the same arguments resumes the replay there.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=4,
    show_default=True,
    help="Items in flight at most: keep it small beside live workers on the same model servers.",
)
@click.option(
    "--verdict-margin",
    type=Duration(),
    default="6h",
    show_default=True,
    help="How long after --to the live verdicts are read (a verdict follows its item by the workers' lag).",
)
@click.option(
    "--bootstrap",
    type=BootstrapServers(),
    default=None,
    help="Kafka bootstrap servers (default: the settings' kafka.bootstrap_servers).",
)
@click.option("--sweep", "axes", multiple=True, type=SweepSpec(), metavar=SweepSpec.name, help=_SWEEP_HELP)
@click.option("--labels", "labels_file", type=_PATH, default=None, help=_LABELS_HELP)
@server_options
@cascade_options(
    "Second model for packs with a cascade block, as in the worker (default: the settings' cascade.model)."
)
def replay(
    config_file: Path | None,
    policy_files: tuple[Path, ...],
    from_time: datetime,
    to_time: datetime,
    out: Path,
    concurrency: int,
    verdict_margin: timedelta,
    bootstrap: str | None,
    axes: tuple[SweepAxis, ...],
    labels_file: Path | None,
    servers: ServerOptions,
    cascade: CascadeOptions,
) -> None:
    """What candidate packs would have decided on past traffic, against the verdicts it got.

    Reads the input topics over --from/--to without a consumer group (nothing is committed or
    published), runs each item through the worker's decision path and writes a report: the
    decision-change matrix, automation and flag rates, model cost, the changed items (and, with
    --labels, precision, recall and F1 of live and candidate over the labeled items).
    """  # fmt: skip
    from streamproc.evaluation.replay import (  # noqa: PLC0415
        ReplayRequest,
        load_labels,
        load_packs,
        threshold_sets,
    )

    if to_time <= from_time:
        raise click.BadParameter("must be after --from", param_hint="--to")
    settings = load(config_file)
    cascade_model = cascade.model or settings.cascade.model
    try:
        policies = load_packs(policy_files)
        sweeps = threshold_sets(axes, policies) if axes else []
        labels = load_labels(labels_file, policies) if labels_file is not None else None
        if cascade_model is not None:
            cascade.settings(settings, settings.inference, cascade_model)  # a bad URL: now
        request = ReplayRequest(policy_files, from_time, to_time, verdict_margin, out, settings.topics)
        quiet_kafka_client()
        kafka = (bootstrap or settings.kafka.bootstrap_servers, settings)
        plan, complete = asyncio.run(_plan(request, policies, kafka))
        _echo_gaps(plan)
        if not complete:
            with model_servers(
                servers, settings, out, packs=policies, other_names=cascade.other_names(cascade_model)
            ) as running:
                second = cascade.settings(settings, running.generative, cascade_model)
                models = (running.generative, running.embedding, second)
                asyncio.run(_replay(plan, policies, kafka, models, out, concurrency))
        report = asyncio.run(_finish(plan, policies, kafka, out, sweeps, labels))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    _echo_report(report, out, bool(sweeps))


@click.command("replay-sweep")
@click.option(
    "--from-dir",
    "directory",
    required=True,
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Folder of a finished `streamproc replay`.",
)
@click.option(
    "--sweep",
    "axes",
    multiple=True,
    required=True,
    type=SweepSpec(),
    metavar=SweepSpec.name,
    help=_SWEEP_HELP,
)
@click.option("--labels", "labels_file", type=_PATH, default=None, help=_LABELS_HELP)
def replay_sweep(directory: Path, axes: tuple[SweepAxis, ...], labels_file: Path | None) -> None:
    """Threshold sets over a finished replay's stored scores: no broker, no model server."""  # fmt: skip
    from streamproc.evaluation.replay import sweep_from_dir  # noqa: PLC0415

    try:
        report = sweep_from_dir(directory, axes, labels_file=labels_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    for threshold_set in report.sets:
        for pack in threshold_set.packs:
            click.echo(
                f"{threshold_set.label}: {pack.pack} changed {pack.changed} of {pack.with_live_verdict}, "
                f"automation {pack.live_automation_rate:.1%} -> {pack.candidate_automation_rate:.1%}"
                + _f1(pack)
            )
    click.echo(f"sweep: {directory / 'sweep.md'}")


async def _plan(
    request: ReplayRequest, policies: Sequence[Policy], kafka: tuple[str, Settings]
) -> tuple[ReplayPlan, bool]:
    from streamproc.evaluation.replay import plan_replay  # noqa: PLC0415
    from streamproc.evaluation.replay.store import load_progress  # noqa: PLC0415

    async with _reader(kafka) as source:
        plan = await plan_replay(request, policies, source)
    return plan, load_progress(request.out).complete


async def _replay(
    plan: ReplayPlan,
    policies: Sequence[Policy],
    kafka: tuple[str, Settings],
    models: tuple[InferenceSettings, InferenceSettings | None, InferenceSettings | None],
    out: Path,
    concurrency: int,
) -> None:
    from streamproc.evaluation.replay import run_replay  # noqa: PLC0415
    from streamproc.evaluation.runner import offline_client  # noqa: PLC0415
    from streamproc.policy import model_roles  # noqa: PLC0415

    generative, embedding, second = models
    async with contextlib.AsyncExitStack() as stack:
        source = await stack.enter_async_context(_reader(kafka))
        model = await stack.enter_async_context(offline_client(generative, embedding, model_roles(policies)))
        cascade = None
        if second is not None:
            cascade = await stack.enter_async_context(offline_client(second, None, (True, False)))
        await run_replay(
            plan,
            policies,
            source,
            model,
            out,
            concurrency=concurrency,
            second=cascade,
            on_progress=_progress(),
        )


async def _finish(
    plan: ReplayPlan,
    policies: Sequence[Policy],
    kafka: tuple[str, Settings],
    out: Path,
    sweeps: Sequence[ThresholdSet],
    labels: Labels | None,
) -> ReplayReport:
    from streamproc.evaluation.replay import finish_replay  # noqa: PLC0415

    async with _reader(kafka) as source:
        return await finish_replay(plan, policies, source, out, sweeps=sweeps, labels=labels)


def _reader(kafka: tuple[str, Settings]) -> KafkaRangeReader:
    from streamproc.stream.time_range import KafkaRangeReader  # noqa: PLC0415

    bootstrap, settings = kafka
    return KafkaRangeReader(bootstrap, settings.kafka.client_id, settings.kafka)


def _progress() -> Callable[[ReplayProgress], None]:
    """Progress lines on stderr: every second on a terminal, every 10 s in a log."""
    every = 1.0 if sys.stderr.isatty() else 10.0
    shown = [0.0]

    def show(progress: ReplayProgress) -> None:
        now = time.monotonic()
        if now - shown[0] < every and progress.records_done < progress.records_total:
            return
        shown[0] = now
        eta = progress.eta_seconds
        click.echo(
            f"replay: {progress.records_done} of {progress.records_total} records, {progress.items_done} "
            f"items, {progress.rate:.2f} items/s" + (f", ETA {_duration(eta)}" if eta is not None else ""),
            err=True,
        )

    return show


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _echo_gaps(plan: ReplayPlan) -> None:
    """What the topics no longer hold, before minutes of replaying."""
    from streamproc.evaluation.replay import retention_gaps  # noqa: PLC0415

    for gap in retention_gaps(plan):
        click.echo(
            f"warning: {gap.topic} partition {gap.partition} retains records only from "
            f"{gap.earliest.isoformat(timespec='seconds')}, after --from: earlier traffic is not replayed",
            err=True,
        )


def _f1(pack: PackReport) -> str:
    """The violation F1s against the labels, when there are any."""
    if pack.labeled is None:
        return ""
    labeled = pack.labeled
    return (
        f"; violation F1 over {labeled.compared} labeled items "
        f"{labeled.live.f1:.3f} live -> {labeled.candidate.f1:.3f} candidate"
    )


def _echo_report(report: ReplayReport, out: Path, swept: bool) -> None:
    for pack in report.packs:
        click.echo(
            f"{pack.version}: {pack.items} items replayed, {pack.with_live_verdict} with a live verdict, "
            f"{pack.without_live_verdict} without; {pack.changed} changed; automation rate "
            f"{pack.live_automation_rate:.1%} live -> {pack.candidate_automation_rate:.1%} candidate"
            + _f1(pack)
        )
        if pack.candidate_errors:
            click.echo(
                f"{pack.pack}: {pack.candidate_errors} items could not be scored (inference errors): they "
                "count as reviews, as in the worker; check the model server's log"
            )
    click.echo(f"report: {out / 'report.md'}")
    if swept:
        click.echo(f"sweep: {out / 'sweep.md'}")
