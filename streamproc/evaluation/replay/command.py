"""What ``streamproc replay`` and ``replay-sweep`` do: plan (or resume), replay, join, report.

Each step takes its record source and model client, so tests drive them with in-memory
records and a fake model; the command wires Kafka and the model servers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from streamproc.config import TopicSettings
from streamproc.decision import ModelClient
from streamproc.errors import ConfigError
from streamproc.evaluation.replay.join import RevisionKey, read_live_verdicts
from streamproc.evaluation.replay.labels import Labels, load_labels
from streamproc.evaluation.replay.markdown import render_replay, render_sweep
from streamproc.evaluation.replay.records import BadRecord, PackRef, ReplayedItem, ReplayPlan
from streamproc.evaluation.replay.report import ReplayReport, RetentionGap, RunFigures, SweepReport, SweepSet
from streamproc.evaluation.replay.run import ReplayProgress, replay
from streamproc.evaluation.replay.store import load_plan, load_progress, load_results, save_plan
from streamproc.evaluation.replay.sweep import SweepAxis, ThresholdSet, rescore, threshold_sets
from streamproc.evaluation.replay.tables import changes, pack_report
from streamproc.policy import Policy, load_pack
from streamproc.schemas import Verdict, encode
from streamproc.stream.time_range import RangeSource

__all__ = [
    "CHANGES_SHOWN",
    "LIVE_VERDICTS",
    "ReplayRequest",
    "finish_replay",
    "load_packs",
    "plan_replay",
    "replayed_packs",
    "retention_gaps",
    "run_replay",
    "sweep_from_dir",
    "write_sweep",
]

#: Changed items listed in report.md per pack (changes.jsonl holds them all).
CHANGES_SHOWN: Final = 50
#: The live verdicts of the replayed items, kept so that a sweep needs no broker.
LIVE_VERDICTS: Final = "live_verdicts.jsonl"


@dataclass(frozen=True)
class ReplayRequest:
    """A replay's arguments, as checked by the command line."""

    policy_files: tuple[Path, ...]
    from_time: datetime
    to_time: datetime
    verdict_margin: timedelta
    out: Path
    topics: TopicSettings


def load_packs(files: Sequence[Path]) -> list[Policy]:
    """The candidate packs, with distinct names (their results are told apart by name).

    Raises:
        ConfigError: an invalid pack, or two packs of one name.
    """
    packs = [load_pack(path) for path in files]
    names = [p.name for p in packs]
    if len(set(names)) != len(names):
        raise ConfigError(f"--policy packs need distinct names, got {names}")
    return packs


async def plan_replay(request: ReplayRequest, policies: Sequence[Policy], source: RangeSource) -> ReplayPlan:
    """The plan in ``request.out`` if a replay of these arguments started there, else a new one
    (the offsets of the range, fixed now).

    Raises:
        ConfigError: ``out`` holds a replay of other arguments.
    """
    topics = {p.content_type: _topic(request.topics, p.content_type) for p in policies}
    wanted = ReplayPlan(
        from_time=request.from_time,
        to_time=request.to_time,
        verdict_margin_seconds=request.verdict_margin.total_seconds(),
        packs=tuple(
            PackRef(name=p.name, version=p.version, content_type=p.content_type, path=str(f.resolve()))
            for p, f in zip(policies, request.policy_files, strict=True)
        ),
        topics=dict(sorted(topics.items())),
        verdict_topic=request.topics.verdicts,
        inputs=(),
        verdicts=(),
        planned_at=datetime.now(UTC),
    )
    existing = load_plan(request.out)
    if existing is not None:
        difference = existing.difference(wanted)
        if difference is not None:
            raise ConfigError(
                f"{request.out} holds a replay with other arguments: {difference}; rerun with the same "
                "arguments to resume it, or give another --out"
            )
        return existing
    margin_ms = int(request.verdict_margin.total_seconds() * 1000)
    inputs = await source.ranges(list(wanted.topics.values()), wanted.from_ms, wanted.to_ms)
    verdicts = await source.ranges([wanted.verdict_topic], wanted.from_ms, wanted.to_ms + margin_ms)
    plan = wanted.model_copy(update={"inputs": tuple(inputs), "verdicts": tuple(verdicts)})
    save_plan(request.out, plan)
    return plan


async def run_replay(
    plan: ReplayPlan,
    policies: Sequence[Policy],
    source: RangeSource,
    model: ModelClient,
    out: Path,
    *,
    concurrency: int,
    second: ModelClient | None = None,
    on_progress: Callable[[ReplayProgress], None] | None = None,
) -> None:
    """Replay what is left of the plan (nothing when it is complete)."""
    if not load_progress(out).complete:
        await replay(
            plan,
            policies,
            source,
            model,
            out,
            concurrency=concurrency,
            second=second,
            on_progress=on_progress,
        )


async def finish_replay(
    plan: ReplayPlan,
    policies: Sequence[Policy],
    source: RangeSource,
    out: Path,
    *,
    sweeps: Sequence[ThresholdSet] = (),
    shown: int = CHANGES_SHOWN,
    labels: Labels | None = None,
) -> ReplayReport:
    """Join the results with the live verdicts (and ``labels``, when given); write report.json,
    report.md, changes.jsonl (and the sweep's files when ``sweeps`` are given)."""
    results = load_results(out)
    items = [e for e in results if isinstance(e, ReplayedItem)]
    live = await read_live_verdicts(source, plan, {i.revision_key for i in items})
    _write_lines(out / LIVE_VERDICTS, [encode(v) for _, v in sorted(live.by_revision.items())])
    by_pack = {p.name: [i for i in items if i.pack == p.name] for p in policies}
    busy = load_progress(out).busy_seconds
    report = ReplayReport(
        from_time=plan.from_time,
        to_time=plan.to_time,
        verdicts_until=plan.to_time + timedelta(seconds=plan.verdict_margin_seconds),
        retention_gaps=retention_gaps(plan),
        undecodable_records=sum(1 for e in results if isinstance(e, BadRecord)),
        live_verdicts_read=live.read,
        other_verdicts_skipped=live.other_kinds,
        packs=tuple(
            pack_report(p, by_pack[p.name], live.by_revision, shown=shown, labels=labels) for p in policies
        ),
        run=RunFigures(busy_seconds=busy, items_per_second=len(items) / busy if busy > 0 else 0.0),
        generated_at=datetime.now(UTC),
    )
    (out / "report.json").write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_replay(report), encoding="utf-8")
    every_change = [c for p in policies for c in changes(p, by_pack[p.name], live.by_revision)]
    _write_lines(out / "changes.jsonl", [c.model_dump_json().encode() for c in every_change])
    if sweeps:
        write_sweep(plan, policies, items, live.by_revision, sweeps, out, shown=shown, labels=labels)
    return report


def sweep_from_dir(
    out: Path, axes: Sequence[SweepAxis], *, shown: int = CHANGES_SHOWN, labels_file: Path | None = None
) -> SweepReport:
    """A sweep over a finished replay in ``out``: its stored scores and live verdicts, no broker;
    with ``labels_file``, the figures against its labels per threshold set.

    Raises:
        ConfigError: no finished replay there, a pack file changed since, a bad sweep or a bad
            labels file.
    """
    plan = load_plan(out)
    if plan is None or not load_progress(out).complete or not (out / LIVE_VERDICTS).is_file():
        raise ConfigError(
            f"--from-dir {out} holds no finished replay; run `streamproc replay --out {out}` first"
        )
    policies = replayed_packs(plan)
    sweeps = threshold_sets(axes, policies)
    labels = load_labels(labels_file, policies) if labels_file is not None else None
    items = [e for e in load_results(out) if isinstance(e, ReplayedItem)]
    verdicts = [Verdict.model_validate_json(line) for line in (out / LIVE_VERDICTS).read_bytes().splitlines()]
    live: dict[RevisionKey, Verdict] = {(v.content_type, v.content_id, v.revision): v for v in verdicts}
    return write_sweep(plan, policies, items, live, sweeps, out, shown=shown, labels=labels)


def replayed_packs(plan: ReplayPlan) -> list[Policy]:
    """The packs the plan names, as they were replayed.

    Raises:
        ConfigError: a pack file is gone or changed since the replay.
    """
    policies = []
    for ref in plan.packs:
        policy = load_pack(Path(ref.path))
        if policy.version != ref.version:
            raise ConfigError(
                f"{ref.path} changed since the replay ({ref.version} then, {policy.version} now); "
                "restore it, or replay the new version"
            )
        policies.append(policy)
    return policies


def write_sweep(
    plan: ReplayPlan,
    policies: Sequence[Policy],
    items: Sequence[ReplayedItem],
    live: dict[RevisionKey, Verdict],
    sweeps: Sequence[ThresholdSet],
    out: Path,
    *,
    shown: int,
    labels: Labels | None = None,
) -> SweepReport:
    """The tables at each threshold set; sweep.json and sweep.md in ``out``."""
    sets = []
    for threshold_set in sweeps:
        packs = []
        for policy in policies:
            swept = threshold_set.apply(policy)
            rescored = rescore(swept, [i for i in items if i.pack == policy.name])
            packs.append(pack_report(swept, rescored, live, shown=shown, labels=labels))
        sets.append(
            SweepSet(label=threshold_set.label, thresholds=threshold_set.thresholds(), packs=tuple(packs))
        )
    report = SweepReport(from_time=plan.from_time, to_time=plan.to_time, sets=tuple(sets))
    (out / "sweep.json").write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    (out / "sweep.md").write_text(render_sweep(report), encoding="utf-8")
    return report


def _topic(topics: TopicSettings, content_type: str) -> str:
    return topics.listings if content_type == "listing" else topics.videos


def retention_gaps(plan: ReplayPlan) -> tuple[RetentionGap, ...]:
    """Partitions whose oldest retained record is younger than the range's start."""
    return tuple(
        RetentionGap(
            topic=r.topic,
            partition=r.partition,
            log_start=r.log_start,
            earliest=datetime.fromtimestamp(r.earliest_ms / 1000, UTC),
        )
        for r in plan.inputs
        if r.earliest_ms is not None and r.earliest_ms > plan.from_ms
    )


def _write_lines(path: Path, lines: Sequence[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
