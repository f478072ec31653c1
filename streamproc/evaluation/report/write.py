"""Writing a report: ``report.json``, ``report.md`` and a ``pr_<category>.png`` per category."""

from __future__ import annotations

from pathlib import Path

from streamproc.evaluation.report.markdown import render_markdown
from streamproc.evaluation.report.model import EvalReport
from streamproc.evaluation.report.plots import plot_curves

__all__ = ["write_report"]


def write_report(out: Path, report: EvalReport) -> list[Path]:
    """Write the report's files into ``out`` (created if missing); return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    plots = plot_curves(out, report)
    md_path.write_text(render_markdown(report, {c: p.name for c, p in plots.items()}), encoding="utf-8")
    return [json_path, md_path, *plots.values()]
