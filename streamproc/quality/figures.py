"""The quality service's exported figures, computed from the join store (pure reads)."""

from __future__ import annotations

from typing import get_args

from streamproc.accuracy import Confusion
from streamproc.metrics import QUALITY_METRICS, Figures, QualityRecorder
from streamproc.quality.join import accuracy, labeler_agreement
from streamproc.quality.store import QualityStore
from streamproc.schemas import LabelSource

__all__ = ["figures", "refresh_figures"]

# Every gauge a refresh sets (all of the service's gauges but the refresh timestamp); a
# series absent from a refresh is removed (pruned data).
_FIGURES = tuple(
    spec.name
    for spec in QUALITY_METRICS
    if spec.kind == "gauge" and spec.name != "quality_figures_updated_timestamp_seconds"
)


def figures(store: QualityStore) -> Figures:
    """Every store-derived gauge value: metric name → label values → value."""
    out: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in _FIGURES}
    out["quality_store_items"][()] = store.item_count()
    counts = store.label_counts()
    for source in (*get_args(LabelSource), *counts):
        out["quality_labels"][(source,)] = counts.get(source, 0)

    live: dict[str, tuple[int, int]] = {}
    for row in store.verdict_counts():
        out["quality_verdicts"][(row.policy_version, row.mode, row.decision)] = row.count
        if row.mode == "live":
            automated, total = live.get(row.policy_version, (0, 0))
            live[row.policy_version] = (automated + row.count * (row.decision != "review"), total + row.count)
    for version, (automated, total) in live.items():
        out["quality_automation_ratio"][(version,)] = automated / total

    items = list(store.labeled_items())
    for (version, mode), result in accuracy(items).items():
        out["quality_pairs"][(version, mode)] = result.pairs
        out["quality_pairs_excluded"][(version, mode, "inference_error")] = result.excluded
        for category, confusion in result.confusion.items():
            for outcome in ("tp", "fp", "fn", "tn"):
                out["quality_confusion"][(version, mode, category, outcome)] = getattr(confusion, outcome)
            out["quality_precision_ratio"][(version, mode, category)] = confusion.precision
            out["quality_recall_ratio"][(version, mode, category)] = confusion.recall
            out["quality_f1_ratio"][(version, mode, category)] = confusion.f1
        if result.pairs:  # like the categories': no figures from excluded pairs alone
            _violation(out, (version, mode), result.violation)

    agreement = labeler_agreement(item.labels for item in items)
    out["quality_labeler_pairs"][()] = agreement.pairs
    out["quality_labeler_exact_agreement_ratio"][()] = agreement.exact_ratio
    for category in agreement.per_category:
        out["quality_labeler_agreement_ratio"][(category,)] = agreement.ratio(category)

    for shadow in store.shadow_agreement():
        out["quality_shadow_compared"][(shadow.policy_version,)] = shadow.compared
        out["quality_shadow_agreement_ratio"][(shadow.policy_version,)] = shadow.ratio
    for human in store.human_counts():
        overturned = "true" if human.overturned else "false"
        out["quality_human_verdicts"][(human.policy_version, human.source, overturned)] = human.count
    return out


def _violation(out: dict[str, dict[tuple[str, ...], float]], key: tuple[str, str], c: Confusion) -> None:
    for outcome in ("tp", "fp", "fn", "tn"):
        out["quality_violation_confusion"][(*key, outcome)] = getattr(c, outcome)
    out["quality_violation_precision_ratio"][key] = c.precision
    out["quality_violation_recall_ratio"][key] = c.recall
    out["quality_violation_f1_ratio"][key] = c.f1


def refresh_figures(store: QualityStore, metrics: QualityRecorder) -> None:
    """Set every store-derived gauge from the store; series that no longer exist are removed."""
    metrics.figures(figures(store))
