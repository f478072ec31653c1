"""What ``streamproc train`` does: embed a labeled split through the embedding server, fit
probe heads per pack, fit thresholds on out-of-fold scores, write heads and packs.

Each pack's items are embedded once. The heads written are fitted on every item; the
thresholds are fitted (as ``streamproc calibrate`` fits them) on scores that each item got
from heads that never saw it, run through the worker's own decision path (pre-rules
included), so the figures printed are what the split can honestly say.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np

from streamproc.config import InferenceSettings
from streamproc.decision import ModelClient
from streamproc.errors import ConfigError
from streamproc.evaluation.calibrate import (
    CategoryFit,
    Targets,
    figures,
    fit_category,
    fit_thresholds,
    require_fitting_libraries,
)
from streamproc.evaluation.dataset import LabeledItem, check_categories, load_dataset
from streamproc.evaluation.pack_yaml import calibrated_pack_text
from streamproc.evaluation.report.model import ViolationFigures
from streamproc.evaluation.report.violation import violation_report
from streamproc.evaluation.runner import ItemResult, offline_client, run_packs
from streamproc.evaluation.train import HeadFigures, fit_heads, folds
from streamproc.inference.protocol import ModelAnswer, ModelRequest
from streamproc.policy import ItemContent, Policy, item_content, load_pack
from streamproc.policy.heads import Backbone, ProbeHeads
from streamproc.policy.model import CalibrationProvenance, HeadsRef, Thresholds
from streamproc.policy.scorers import EmbeddingProbeScorer

__all__ = ["TrainPlan", "TrainTarget", "TrainedPack", "plan_training", "run_training"]

_SCORER = EmbeddingProbeScorer()


@dataclass(frozen=True)
class TrainTarget:
    source: Path
    policy: Policy
    out: Path
    heads_out: Path
    items: list[LabeledItem]


@dataclass(frozen=True)
class TrainPlan:
    data: Path
    dataset_sha256: str
    packs: list[TrainTarget]
    targets: Targets
    min_positives: int
    #: Write the pack as a shadow candidate of this name.
    shadow: str | None = None

    @property
    def requests(self) -> int:
        return sum(len(p.items) for p in self.packs)


@dataclass(frozen=True)
class TrainedPack:
    target: TrainTarget
    heads: dict[str, HeadFigures]
    fits: list[CategoryFit]
    #: Violation figures of the out-of-fold scores under the fitted thresholds.
    out_of_fold: ViolationFigures
    provenance: CalibrationProvenance


def plan_training(
    policy_files: Sequence[Path], data: Path, out: Path, targets: Targets, *, shadow: str | None = None
) -> TrainPlan:
    """Load and check the packs and the split before any server starts. With ``shadow``, the
    one pack is written as a candidate of that name (``mode: shadow``), to run beside it.

    Raises:
        ConfigError: a missing library, an invalid pack or dataset, --out a file.
    """
    require_fitting_libraries()
    if out.suffix in {".yaml", ".yml", ".json"}:
        raise ConfigError(
            f"--out {out} must be a folder: DIR/<pack name>.yaml and DIR/<pack name>.heads.json"
        )
    if shadow is not None and len(policy_files) != 1:
        raise ConfigError(f"--shadow {shadow} names one candidate; give one --policy")
    items = load_dataset(data)
    packs = []
    for path in policy_files:
        policy = load_pack(path)
        name = shadow or policy.name
        target = out / f"{name}.yaml"
        if target.resolve() == path.resolve():
            raise ConfigError(f"--out would overwrite {path}; write the trained pack elsewhere and diff it")
        matching = [i for i in items if i.content_type == policy.content_type]
        if not matching:
            raise ConfigError(f"{data} has no {policy.content_type} items to train {policy.name} on")
        check_categories(data, matching, [policy])
        packs.append(TrainTarget(path, policy, target, out / f"{name}.heads.json", matching))
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    return TrainPlan(data, digest, packs, targets, min_positives=5, shadow=shadow)


class _Embedded:
    """A model client that answers embeddings requests from vectors already fetched."""

    def __init__(self, vectors: dict[str, tuple[float, ...]]) -> None:
        self._vectors = vectors

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        return ModelAnswer(text="", embeddings=(self._vectors[request.body["input"][0]],))


async def _embed(
    policy: Policy,
    items: Sequence[LabeledItem],
    model: ModelClient,
    concurrency: int,
    on_done: Callable[[], None] | None,
) -> tuple[list[str], dict[str, tuple[float, ...]]]:
    """Each item's text as the worker's scorer sends it, and each distinct text's embedding."""
    texts = [item_content(policy, i.event).text for i in items]
    gate = asyncio.Semaphore(concurrency)

    async def one(text: str) -> tuple[str, tuple[float, ...]]:
        [request] = _SCORER.requests(policy, ItemContent(text))
        async with gate:
            answer = await model.complete(request)
        if on_done is not None:
            on_done()
        return text, answer.embeddings[0]

    return texts, dict(await asyncio.gather(*(one(text) for text in dict.fromkeys(texts))))


def _probe_policy(
    policy: Policy, heads: ProbeHeads, thresholds: dict[str, Thresholds] | None = None
) -> Policy:
    """The pack scoring with these heads (and thresholds), without any score calibration."""
    ref = HeadsRef(file="(in memory)", sha256="0" * 64)
    probe = dataclasses.replace(
        policy, scorer="embedding_probe", heads=ref, probe=heads, calibration_provenance=None
    )
    probe = probe.with_calibration(dict.fromkeys(policy.category_ids))
    return probe.with_thresholds(thresholds) if thresholds else probe


async def _out_of_fold(
    policy: Policy,
    items: Sequence[LabeledItem],
    client: _Embedded,
    fold_heads: Sequence[tuple[tuple[int, ...], ProbeHeads]],
    thresholds: dict[str, Thresholds] | None,
) -> list[ItemResult]:
    """Every item's result from the heads of the fold that held it out, in dataset order."""
    results: dict[int, ItemResult] = {}
    for held_out, heads in fold_heads:
        [fold] = await run_packs(
            [_probe_policy(policy, heads, thresholds)], [items[i] for i in held_out], client, concurrency=64
        )
        results.update(zip(held_out, fold, strict=True))
    return [results[i] for i in range(len(items))]


def _fit_thresholds(
    policy: Policy, heads: ProbeHeads, scored: Sequence[ItemResult], plan: TrainPlan
) -> list[CategoryFit]:
    """One review threshold for every category, fitted on "any violation": the heads give the
    likeliest category the flagged head's probability, so an item is held when that reaches
    it (per-category recall targets would each pull it down for their hardest positives).
    Reject thresholds per category, as ``streamproc calibrate`` fits them."""
    flagged = [max(r.scores.values()) for r in scored]
    violating = [bool(r.item.true_categories) for r in scored]
    common, _ = fit_thresholds(flagged, violating, plan.targets, Thresholds(reject=1.0, review=1.0))
    fits = []
    for category in policy.category_ids:
        fit = fit_category(
            _probe_policy(policy, heads), category, scored, method="none", targets=plan.targets,
            min_positives=plan.min_positives,
        )  # fmt: skip
        reject = fit.new.reject if fit.fitted else 1.0
        new = Thresholds(reject=reject, review=min(common.review, reject))
        raw = [r.scores.get(category, 0.0) for r in scored]
        labels = [category in r.item.true_categories for r in scored]
        fits.append(
            dataclasses.replace(
                fit, new=new, fitted=True, review=figures(raw, labels, new.review),
                reject=figures(raw, labels, new.reject) if fit.fitted else None,
            )
        )  # fmt: skip
    return fits


async def _train_pack(
    plan: TrainPlan,
    target: TrainTarget,
    model: ModelClient,
    backbone: Backbone,
    meta: dict[str, Any],
    concurrency: int,
    on_done: Callable[[], None] | None,
) -> tuple[TrainedPack, ProbeHeads]:
    policy, items = target.policy, target.items
    texts, vectors = await _embed(policy, items, model, concurrency, on_done)
    x = np.array([vectors[t] for t in texts], dtype=np.float64)
    labels = [i.true_categories for i in items]
    try:
        heads, figures = fit_heads(x, labels, policy.category_ids, backbone, meta)
        fold_heads = [(f.held_out, f.heads) for f in folds(x, labels, policy.category_ids, backbone)]
    except ValueError as exc:
        raise ConfigError(f"{plan.data}: {policy.name}: {exc}; add labeled items") from exc
    client = _Embedded(vectors)
    scored = [r for r in await _out_of_fold(policy, items, client, fold_heads, None) if r.scored]
    fits = _fit_thresholds(policy, heads, scored, plan)
    thresholds = {f.category: f.new for f in fits}
    final = await _out_of_fold(policy, items, client, fold_heads, thresholds)
    provenance = CalibrationProvenance(
        dataset=plan.data.name,
        dataset_sha256=plan.dataset_sha256,
        items=len(items),
        scored_items=len(scored),
        model=meta["embedding_model"],
        scorer="embedding_probe",
        created_at=meta["created_at"],
        method="none",
        review_recall=plan.targets.review_recall,
        reject_precision=plan.targets.reject_precision,
        categories=tuple(f.category for f in fits if f.fitted),
        tool=meta["tool"],
        command=meta["command"],
    )
    violation = violation_report([r for r in final if r.error is None]).system
    return TrainedPack(target, figures, fits, violation, provenance), heads


def run_training(
    plan: TrainPlan,
    embedding: InferenceSettings,
    *,
    backbone: Backbone,
    command: str,
    model: ModelClient | None = None,
    on_done: Callable[[], None] | None = None,
) -> list[TrainedPack]:
    """Embed through the server ``embedding`` names (``model`` replaces its client in tests),
    fit and write every pack of the plan; returns what was fitted.

    Raises:
        ServerUnreachable: the server cannot be reached or does not serve the model.
        ConfigError: a head has too few positives to fit.
    """
    created = datetime.now(UTC).replace(microsecond=0)
    meta = {
        "dataset": plan.data.name, "dataset_sha256": plan.dataset_sha256, "embedding_model": embedding.model,
        "created_at": created, "tool": f"streamproc {package_version('streamproc')}", "command": command,
    }  # fmt: skip
    trained = asyncio.run(_train_all(plan, embedding, model, backbone, meta, on_done))
    for pack, heads in trained:
        _write(pack, heads, meta, plan.shadow)
    return [pack for pack, _ in trained]


async def _train_all(
    plan: TrainPlan,
    settings: InferenceSettings,
    model: ModelClient | None,
    backbone: Backbone,
    meta: dict[str, Any],
    on_done: Callable[[], None] | None,
) -> list[tuple[TrainedPack, ProbeHeads]]:
    if model is None:  # whatever the packs' scorer was, training reads embeddings
        async with offline_client(settings, None, (False, True)) as client:
            return await _train_all(plan, settings, client, backbone, meta, on_done)
    return [
        await _train_pack(plan, target, model, backbone, meta, settings.max_inflight, on_done)
        for target in plan.packs
    ]


def _rounded(value: Any) -> Any:
    """Floats to 7 significant digits (float32's precision; the file stays small enough for
    a Kubernetes ConfigMap beside its pack)."""
    if isinstance(value, float):
        return float(f"{value:.7g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def _write(pack: TrainedPack, heads: ProbeHeads, meta: dict[str, Any], shadow: str | None) -> None:
    target = pack.target
    target.out.parent.mkdir(parents=True, exist_ok=True)
    provenance = {**heads.provenance, **{k: str(v) for k, v in meta.items()}, "items": len(target.items)}
    data = {**_rounded(dataclasses.asdict(heads)), "provenance": provenance}
    content = json.dumps(data, separators=(",", ":")).encode() + b"\n"
    target.heads_out.write_bytes(content)
    ref = {"file": target.heads_out.name, "sha256": hashlib.sha256(content).hexdigest()}
    top: dict[str, Any] = {"scorer": "embedding_probe", "heads": ref}
    if shadow is not None:
        top |= {"name": shadow, "mode": "shadow"}
    text, _ = calibrated_pack_text(target.source, pack.fits, pack.provenance, top=top)
    target.out.write_text(text, encoding="utf-8")
    written = load_pack(target.out)  # reads back: checksum, width, categories
    read = _rounded(dataclasses.asdict(written.probe)) if written.probe is not None else None
    if read is None or {**read, "provenance": provenance} != data:
        raise ConfigError(f"{target.out}: the heads do not read back as written; please report this")
