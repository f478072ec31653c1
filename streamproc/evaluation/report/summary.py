"""All packs together: ``summary.json`` and ``summary.md`` beside the per-pack report folders.

Written when several packs run alone (one report each, e.g. a listings and a videos pack):
the violation figures of each pack and of all their items together, so that one number
says whether violating items are caught across every content type.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from streamproc.evaluation.report.markdown import violation_headline, violation_markdown
from streamproc.evaluation.report.model import (
    DatasetRef,
    EvalReport,
    ServedModel,
    ViolationReport,
    _Frozen,
)
from streamproc.evaluation.report.violation import combine_violation

__all__ = [
    "OVERALL",
    "EvalSummary",
    "PackViolation",
    "build_summary",
    "render_summary",
    "summary_headlines",
    "write_summary",
]

#: How tables and the console name all packs together.
OVERALL = "all packs"


class PackViolation(_Frozen):
    """One pack's violation figures, and where its full report is."""

    name: str
    version: str
    label: str
    scorer: str
    #: The pack's report folder, relative to the summary's.
    report: str
    violation: ViolationReport


class EvalSummary(_Frozen):
    """``summary.json``: every pack's violation figures and all packs' together."""

    dataset: DatasetRef
    model: ServedModel
    generated_at: datetime
    packs: tuple[PackViolation, ...]
    #: Every pack's evaluated items together: counts added, ratios recomputed.
    overall: ViolationReport


def build_summary(out: Path, reports: Sequence[tuple[Path, EvalReport]]) -> EvalSummary:
    """The summary of reports written into folders under ``out``; each holds one pack."""
    packs = tuple(
        PackViolation(
            name=pack.name,
            version=pack.version,
            label=pack.version,
            scorer=pack.scorer,
            report=directory.relative_to(out).as_posix(),
            violation=pack.violation,
        )
        for directory, report in reports
        for pack in report.packs
    )
    first = reports[0][1]
    return EvalSummary(
        dataset=first.dataset,
        model=first.model,
        generated_at=first.generated_at,
        packs=packs,
        overall=combine_violation([p.violation for p in packs]),
    )


def summary_headlines(summary: EvalSummary) -> list[str]:
    """Console lines: each pack's, then all packs together."""
    lines = [violation_headline(p.label, p.violation) for p in summary.packs]
    return [*lines, violation_headline(OVERALL, summary.overall)]


def render_summary(summary: EvalSummary) -> str:
    names = ", ".join(f"`{p.version}`" for p in summary.packs)
    lines = [
        f"# Offline evaluation summary: {names}",
        "",
        f"Dataset `{summary.dataset.path}` ({summary.dataset.items} items), model "
        f"`{summary.model.name}` at {summary.model.base_url}, {summary.generated_at.isoformat()}. "
        f"Each pack's full report: {', '.join(f'[{p.label}]({p.report}/report.md)' for p in summary.packs)}; "
        f"`{OVERALL}`: every pack's items together.",
        "",
    ]
    table = violation_markdown([*((p.label, p.violation) for p in summary.packs), (OVERALL, summary.overall)])
    return "\n".join([*lines, *table])


def write_summary(out: Path, summary: EvalSummary) -> list[Path]:
    """Write ``summary.json`` and ``summary.md`` into ``out``; return their paths."""
    json_path, md_path = out / "summary.json", out / "summary.md"
    json_path.write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")
    md_path.write_text(render_summary(summary), encoding="utf-8")
    return [json_path, md_path]
