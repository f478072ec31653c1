"""The quality service's exported figures, recomputed from the join store."""

from __future__ import annotations

from typing import get_args

from prometheus_client import Gauge

from streamproc.metrics import QualityMetrics
from streamproc.quality.join import accuracy, labeler_agreement
from streamproc.quality.store import QualityStore
from streamproc.schemas import LabelSource

__all__ = ["refresh_figures"]


def refresh_figures(store: QualityStore, metrics: QualityMetrics) -> None:
    """Set every store-derived gauge from the store; series that no longer exist are removed."""
    gauges = _Gauges(metrics)
    metrics.store_items.set(store.item_count())
    counts = store.label_counts()
    for source in (*get_args(LabelSource), *counts):
        gauges.put(metrics.labels, counts.get(source, 0), source)

    live: dict[str, tuple[int, int]] = {}
    for row in store.verdict_counts():
        gauges.put(metrics.verdicts, row.count, row.policy_version, row.mode, row.decision)
        if row.mode == "live":
            automated, total = live.get(row.policy_version, (0, 0))
            live[row.policy_version] = (automated + row.count * (row.decision != "review"), total + row.count)
    for version, (automated, total) in live.items():
        gauges.put(metrics.automation, automated / total, version)

    items = list(store.labeled_items())
    for (version, mode), result in accuracy(items).items():
        gauges.put(metrics.pairs, result.pairs, version, mode)
        gauges.put(metrics.pairs_excluded, result.excluded, version, mode, "inference_error")
        for category, confusion in result.confusion.items():
            for outcome in ("tp", "fp", "fn", "tn"):
                gauges.put(metrics.confusion, getattr(confusion, outcome), version, mode, category, outcome)
            gauges.put(metrics.precision, confusion.precision, version, mode, category)
            gauges.put(metrics.recall, confusion.recall, version, mode, category)
            gauges.put(metrics.f1, confusion.f1, version, mode, category)

    agreement = labeler_agreement(item.labels for item in items)
    metrics.labeler_pairs.set(agreement.pairs)
    metrics.labeler_exact_agreement.set(agreement.exact_ratio)
    for category in agreement.per_category:
        gauges.put(metrics.labeler_agreement, agreement.ratio(category), category)

    for shadow in store.shadow_agreement():
        gauges.put(metrics.shadow_compared, shadow.compared, shadow.policy_version)
        gauges.put(metrics.shadow_agreement, shadow.ratio, shadow.policy_version)
    for human in store.human_counts():
        overturned = "true" if human.overturned else "false"
        gauges.put(metrics.human_verdicts, human.count, human.policy_version, human.source, overturned)
    gauges.remove_unseen()


class _Gauges:
    """Sets labelled gauges and removes, at the end, the series not set this time (pruned data).

    Values are set in place, never cleared first, so a scrape meanwhile sees old or new
    values, not gaps.
    """

    def __init__(self, metrics: QualityMetrics) -> None:
        self._metrics = metrics
        self._seen: dict[int, set[tuple[str, ...]]] = {}

    def put(self, gauge: Gauge, value: float, *labels: str) -> None:
        gauge.labels(*labels).set(value)
        self._seen.setdefault(id(gauge), set()).add(labels)

    def remove_unseen(self) -> None:
        metrics = self._metrics
        labelled = (
            metrics.labels,
            metrics.verdicts,
            metrics.automation,
            metrics.pairs,
            metrics.pairs_excluded,
            metrics.confusion,
            metrics.precision,
            metrics.recall,
            metrics.f1,
            metrics.labeler_agreement,
            metrics.shadow_compared,
            metrics.shadow_agreement,
            metrics.human_verdicts,
        )
        for gauge in labelled:
            seen = self._seen.get(id(gauge), set())
            held = {tuple(s.labels.values()) for family in gauge.collect() for s in family.samples}
            for labels in held - seen:
                gauge.remove(*labels)
