"""``pr_<category>.png``: every pack's precision-recall curve of a category on the same axes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from streamproc.evaluation.report.model import EvalReport, InPackCategory, PrecisionRecallCurve

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_curves"]


def plot_curves(out: Path, report: EvalReport) -> dict[str, Path]:
    """Write one PNG per category of the report into ``out``; return their paths by category."""
    import matplotlib as mpl  # noqa: PLC0415 - only the report needs it, and it is slow to import

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    paths: dict[str, Path] = {}
    for category in report.categories:
        figure, axes = plt.subplots(figsize=(6, 5.5), dpi=100)
        drawn = False
        for index, pack in enumerate(report.packs):
            entry = pack.categories[category]
            if isinstance(entry, InPackCategory) and entry.pr_curve is not None:
                _draw(axes, entry, entry.pr_curve, pack.label, first=index == 0)
                drawn = True
        if not drawn:
            axes.text(0.5, 0.5, "no item scored by the model", ha="center", va="center")
        axes.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall", ylabel="precision", title=category)
        axes.grid(alpha=0.3)
        if drawn:
            axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize="small", frameon=False)
        figure.tight_layout()
        path = out / f"pr_{category}.png"
        figure.savefig(path)
        plt.close(figure)
        paths[category] = path
    return paths


def _draw(axes: Axes, entry: InPackCategory, curve: PrecisionRecallCurve, label: str, *, first: bool) -> None:
    """One pack's curve, and the point its review threshold gives."""
    ap = entry.average_precision
    # Dashed for the second pack: equal curves (same scores) must both stay visible.
    line = axes.plot(
        curve.recall,
        curve.precision,
        drawstyle="steps-post",
        linestyle="-" if first else "--",
        label=label if ap is None else f"{label} (AP {ap:.2f})",
    )[0]
    point = entry.model_at_review_threshold
    axes.plot(
        point.recall,
        point.precision,
        marker="o" if first else "s",
        markersize=8 if first else 6,
        linestyle="none",
        color=line.get_color(),
        label=f"{label} at review threshold {entry.review_threshold:g}",
    )
