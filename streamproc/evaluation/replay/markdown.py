"""``report.md`` and ``sweep.md``: the replay's tables for analysts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from streamproc.evaluation.replay.report import (
    Change,
    LabeledReport,
    PackReport,
    ReplayReport,
    SweepReport,
    VerdictBrief,
)
from streamproc.evaluation.replay.tables import DECISIONS
from streamproc.evaluation.report.model import ConfusionFigures
from streamproc.schemas import Decision

__all__ = ["render_replay", "render_sweep"]

#: The decisions that hold an item back.
_HELD: Final[tuple[Decision, ...]] = ("review", "reject")


def render_replay(report: ReplayReport) -> str:
    names = ", ".join(f"`{p.version}`" for p in report.packs)
    lines = [f"# Replay of {names}", "", *_range_lines(report), ""]
    for pack in report.packs:
        lines += _pack_section(pack)
        lines += _changes(pack.changes_shown, pack.changed)
    run = report.run
    lines += [
        "## Run",
        "",
        f"{run.items_per_second:.2f} items per second over {run.busy_seconds:.0f} s of replaying "
        f"(all runs of this replay); generated {_time(report.generated_at)}.",
        "",
    ]
    return "\n".join(lines)


def render_sweep(report: SweepReport) -> str:
    labeled = any(p.labeled is not None for s in report.sets for p in s.packs)
    lines = [
        f"# Threshold sweep over the replay of {_time(report.from_time)} to {_time(report.to_time)}",
        "",
        "Decisions recomputed from the replay's stored scores (thresholds, then post-rules); no "
        "model call. Items a pre-rule or an inference error decided keep their decisions.",
        "",
        "| thresholds | pack | changed | automation live | automation candidate | flagged (candidate) |"
        + (" violation F1 live | violation F1 candidate |" if labeled else ""),
        "|---|---|---:|---:|---:|---:|" + ("---:|---:|" if labeled else ""),
    ]
    for threshold_set in report.sets:
        for pack in threshold_set.packs:
            flagged = sum(pack.decisions[live][c] for live in DECISIONS for c in _HELD)
            f1 = f" {pack.labeled.live.f1:.3f} | {pack.labeled.candidate.f1:.3f} |" if pack.labeled else ""
            lines.append(
                f"| {threshold_set.label} | {pack.pack} | {pack.changed} | {pack.live_automation_rate:.1%} | "
                f"{pack.candidate_automation_rate:.1%} | {flagged} |" + (f1 or (" | |" if labeled else ""))
            )
    lines.append("")
    for threshold_set in report.sets:
        lines += [f"# {threshold_set.label}", ""]
        for pack in threshold_set.packs:
            lines += _pack_section(pack)
    return "\n".join(lines)


def _range_lines(report: ReplayReport) -> list[str]:
    """The first lines: what the topics no longer hold, then the windows read."""
    lines = [
        f"**Not retained:** `{gap.topic}` partition {gap.partition} holds records only from "
        f"{_time(gap.earliest)} (log start offset {gap.log_start}), after --from: traffic before "
        "that is not replayed."
        for gap in report.retention_gaps
    ]
    if lines:
        lines.append("")
    lines += [
        f"Traffic from {_time(report.from_time)} to {_time(report.to_time)}; live verdicts read until "
        f"{_time(report.verdicts_until)} ({report.live_verdicts_read} automated live verdicts, "
        f"{report.other_verdicts_skipped} of other kinds skipped). {report.undecodable_records} input "
        "records were not valid events (the worker dead-letters them).",
    ]
    return lines


def _pack_section(pack: PackReport) -> list[str]:
    versions = ", ".join(f"`{v}` ({n})" for v, n in pack.live_policy_versions.items()) or "none"
    lines = [
        f"## {pack.version} ({pack.content_type})",
        "",
        "| items | count |",
        "|---|---:|",
        f"| replayed (revisions) | {pack.items} |",
        f"| with a live verdict | {pack.with_live_verdict} |",
        f"| without a live verdict | {pack.without_live_verdict} |",
        f"| duplicate records of a revision | {pack.duplicates} |",
        f"| candidate inference errors (review) | {pack.candidate_errors} |",
        f"| changed (decision or categories) | {pack.changed} |",
        "",
        f"Live verdicts by policy version: {versions}.",
        "",
        "### Decisions, live → candidate",
        "",
        "| live \\ candidate | " + " | ".join(DECISIONS) + " |",
        "|---|" + "---:|" * len(DECISIONS),
    ]
    for live in DECISIONS:
        lines.append(f"| {live} | " + " | ".join(str(pack.decisions[live][c]) for c in DECISIONS) + " |")
    lines += [
        "",
        "### Automation rate (not sent to review)",
        "",
        "| items | live | candidate |",
        "|---|---:|---:|",
        f"| with a live verdict | {pack.live_automation_rate:.1%} | {pack.candidate_automation_rate:.1%} |",
        f"| every replayed item | | {pack.candidate_automation_rate_all:.1%} |",
        "",
        "### Flag rate per category (items with a live verdict)",
        "",
        "| category | live | candidate | change |",
        "|---|---:|---:|---:|",
    ]
    for rate in pack.flag_rates:
        lines.append(
            f"| {rate.category} | {rate.live:.1%} ({rate.live_count}) | {rate.candidate:.1%} "
            f"({rate.candidate_count}) | {rate.candidate - rate.live:+.1%} |"
        )
    return [*lines, "", *(_labeled(pack.labeled) if pack.labeled is not None else []), *_cost(pack)]


def _labeled(labeled: LabeledReport) -> list[str]:
    lines = [
        "### Against labels (violation: flagged = review or reject, as `streamproc eval`)",
        "",
        f"{labeled.labeled} replayed items have a label, {labeled.unlabeled} have none; "
        f"{labeled.labels_unmatched} labels of this content type match no replayed item. Left out: "
        f"{labeled.without_live_verdict} without a live verdict, {labeled.live_errors} decided by an "
        f"error live, {labeled.candidate_errors} by an error in the candidate. Over the other "
        f"{labeled.compared} ({labeled.violating} violating):",
        "",
        "| | precision | recall | F1 | tp | fp | fn | tn |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        _scores_row("violation, live", labeled.live),
        _scores_row("violation, candidate", labeled.candidate),
    ]
    for category in labeled.categories:
        lines += [
            _scores_row(f"{category.category}, live", category.live),
            _scores_row(f"{category.category}, candidate", category.candidate),
        ]
    return [*lines, ""]


def _scores_row(name: str, scores: ConfusionFigures) -> str:
    return (
        f"| {name} | {scores.precision:.1%} | {scores.recall:.1%} | {scores.f1:.3f} | "
        f"{scores.tp} | {scores.fp} | {scores.fn} | {scores.tn} |"
    )


def _cost(pack: PackReport) -> list[str]:
    cost = pack.cost
    return [
        "### Model cost",
        "",
        "| | requests | prompt tokens | completion tokens | per item |",
        "|---|---:|---:|---:|---|",
        f"| candidate (this replay) | {cost.requests} | {cost.prompt_tokens} | {cost.completion_tokens} | "
        f"{cost.requests_per_item:.2f} requests, {cost.prompt_tokens_per_item:.0f} prompt tokens |",
        f"| live (as the verdicts record) | | {cost.live_prompt_tokens} | {cost.live_completion_tokens} | |",
        "",
        *(
            [f"Second-model (cascade) requests: {cost.second_model_requests}.", ""]
            if cost.second_model_requests
            else []
        ),
    ]


def _changes(shown: Sequence[Change], total: int) -> list[str]:
    if not total:
        return ["No item changed.", ""]
    lines = [
        f"### Changed items ({len(shown)} of {total} shown; all in changes.jsonl)",
        "",
        "| item | at | live | candidate |",
        "|---|---|---|---|",
    ]
    for change in shown:
        lines.append(
            f"| {change.content_type} `{change.content_id}` r{change.revision} | {_time(change.timestamp)} | "
            f"{_brief(change.live)} | {_brief(change.candidate)} |"
        )
    return [*lines, ""]


def _brief(verdict: VerdictBrief) -> str:
    by = verdict.decided_by
    decided = "no threshold reached" if by.kind == "none" else f"{by.kind} {by.id}" if by.id else by.kind
    flagged = ", ".join(verdict.flagged) or "none"
    return f"**{verdict.decision}** (flagged: {flagged}; decided by {decided})"


def _time(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
