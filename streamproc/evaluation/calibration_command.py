"""What ``streamproc calibrate`` does: load packs and the calibration split, score it through the
model server, fit each category, write the calibrated packs."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path

from streamproc.config import InferenceSettings
from streamproc.decision import ModelClient
from streamproc.errors import ConfigError
from streamproc.evaluation.calibrate import CategoryFit, Targets, fit_category, require_fitting_libraries
from streamproc.evaluation.content_free import CONTENT_FREE_TEXTS, content_free_items
from streamproc.evaluation.dataset import LabeledItem, check_categories, load_dataset
from streamproc.evaluation.pack_yaml import calibrated_pack_text, cascade_pack_text
from streamproc.evaluation.runner import ItemResult, offline_client, run_packs
from streamproc.policy import Policy, load_pack, model_roles, uses_embeddings
from streamproc.policy.model import CalibrationMethod, CalibrationProvenance
from streamproc.policy.rules import CompiledRules

__all__ = [
    "CalibratedPack",
    "CalibrationPlan",
    "CalibrationRequest",
    "PackTarget",
    "TooFewPositives",
    "plan_calibration",
    "raw_policy",
    "run_calibration",
    "scored_policy",
]


class TooFewPositives(ConfigError):
    """A category asked for has too few labeled positives (or negatives) to fit on."""


@dataclass(frozen=True)
class CalibrationRequest:
    method: CalibrationMethod
    targets: Targets
    #: Positives and negatives a category needs among the scored items to be fitted.
    min_positives: int = 5
    #: Only these categories (each must have enough items); () = every category that has.
    categories: tuple[str, ...] = ()
    #: Fit each pack's cascade calibration (its cascade scorer's scores, from the second model)
    #: instead of its thresholds.
    cascade: bool = False


@dataclass(frozen=True)
class PackTarget:
    """One pack to calibrate and where its calibrated copy goes."""

    source: Path
    policy: Policy
    out: Path
    #: The dataset's items of the pack's content type.
    items: list[LabeledItem]


@dataclass(frozen=True)
class CalibrationPlan:
    """Validated inputs, before any model call."""

    data: Path
    dataset_sha256: str
    dataset_items: int
    packs: list[PackTarget]
    request: CalibrationRequest

    @property
    def requests(self) -> int:
        """Item evaluations to run, content-free items included."""
        extra = len(CONTENT_FREE_TEXTS) if self.request.method == "contextual" else 0
        return sum(len(p.items) + extra for p in self.packs)


@dataclass(frozen=True)
class CalibratedPack:
    """One pack's calibration, as written to ``target.out``."""

    target: PackTarget
    fits: list[CategoryFit]
    provenance: CalibrationProvenance
    #: Items left out of fitting: decided by a pre-rule (no scores), or failed inference.
    pre_rule_decided: int
    errors: int
    #: Lines of the pack the rewrite changed beyond thresholds and calibration (0 normally).
    reformatted_lines: int


def plan_calibration(
    policy_files: Sequence[Path], data: Path, out: Path, request: CalibrationRequest
) -> CalibrationPlan:
    """Load and check everything a run needs, before a model server starts.

    Raises:
        ConfigError: a missing library, an invalid pack or dataset, a bad --out.
        TooFewPositives: a category asked for, or every category, has too few items to fit on.
    """
    require_fitting_libraries()
    if not policy_files:
        raise ConfigError("give a pack to calibrate with --policy PACK.yaml")
    as_file = out.suffix in {".yaml", ".yml"}
    if as_file and len(policy_files) != 1:
        raise ConfigError(f"--out {out} is one file; give a folder for {len(policy_files)} packs")
    items = load_dataset(data)
    packs = []
    for path in policy_files:
        policy = load_pack(path)
        target = out if as_file else out / f"{policy.name}.yaml"
        if target.resolve() == path.resolve():
            raise ConfigError(
                f"--out would overwrite {path}; write the calibrated pack elsewhere and diff it"
            )
        matching = [i for i in items if i.content_type == policy.content_type]
        if not matching:
            raise ConfigError(f"{data} has no {policy.content_type} items to calibrate {policy.name} on")
        if request.cascade:
            _check_cascade_scorer(path, policy, request)
        else:
            _check_not_training_data(path, policy, data)
        check_categories(data, matching, [policy])
        packs.append(PackTarget(path, policy, target, matching))
    targets = [p.out for p in packs]
    if len(set(targets)) != len(targets):
        raise ConfigError(f"packs calibrated together need distinct names (their files in {out})")
    _check_counts(packs, request, data)
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    return CalibrationPlan(data, digest, len(items), packs, request)


def _check_not_training_data(path: Path, policy: Policy, data: Path) -> None:
    """Heads score the items they were trained on too well: thresholds fitted on those scores
    flag too little elsewhere."""
    trained_on = policy.probe.provenance.get("dataset_sha256") if policy.probe is not None else None
    if trained_on == hashlib.sha256(data.read_bytes()).hexdigest():
        raise ConfigError(
            f"{path}: its heads were trained on {data}, so their scores there are optimistic; `streamproc "
            "train` fits thresholds on out-of-fold scores of that split, or calibrate on another split"
        )


def _check_cascade_scorer(path: Path, policy: Policy, request: CalibrationRequest) -> None:
    if policy.cascade is None or policy.cascade.scorer is None:
        raise ConfigError(
            f"{path}: --cascade-model fits a cascade scorer's calibration, and this pack has no cascade "
            "scorer; add cascade: {scorer: channel, band: {low: 0.3, high: 0.7}}"
        )
    if request.method == "none":
        raise ConfigError("--cascade-model fits a calibration: give --method platt, isotonic or contextual")


def _check_counts(packs: Sequence[PackTarget], request: CalibrationRequest, data: Path) -> None:
    """Count positives before the model runs: items a pre-rule decides get no score."""
    known = {c for p in packs for c in p.policy.category_ids}
    unknown = sorted(set(request.categories) - known)
    if unknown:
        raise ConfigError(f"--category {', '.join(unknown)}: no such category in the packs ({sorted(known)})")
    enough = False
    for pack in packs:
        rules = CompiledRules.compile(pack.policy)
        model_items = [i for i in pack.items if rules.pre(i.event) is None]
        for category in pack.policy.category_ids:
            positives = sum(category in i.true_categories for i in model_items)
            negatives = len(model_items) - positives
            ok = min(positives, negatives) >= request.min_positives
            if category in request.categories and not ok:
                raise TooFewPositives(_too_few(pack.policy, category, positives, negatives, request, data))
            enough = enough or (ok and (not request.categories or category in request.categories))
    if not enough:
        raise TooFewPositives(
            f"{data}: no category has {request.min_positives} positives and {request.min_positives} "
            "negatives among the items the model would score (pre-rules decide the rest); add labeled "
            "items or lower --min-positives"
        )


def _too_few(
    policy: Policy, category: str, positives: int, negatives: int, request: CalibrationRequest, data: Path
) -> str:
    return (
        f"{data}: {policy.name} category {category} has {positives} positives and {negatives} negatives "
        f"the model scores, fewer than --min-positives {request.min_positives}; add labeled items"
    )


def raw_policy(policy: Policy) -> Policy:
    """The pack without calibrations: fitting reads the scorer's own scores."""
    plain = policy.with_calibration(dict.fromkeys(policy.category_ids))
    return dataclasses.replace(plain, calibration_provenance=None)


def scored_policy(policy: Policy, request: CalibrationRequest) -> Policy:
    """The pack as the fit scores it: its own scorer's raw scores, or its cascade scorer's."""
    raw = raw_policy(policy)
    if not request.cascade or policy.cascade is None or policy.cascade.scorer is None:
        return raw
    return dataclasses.replace(raw, scorer=policy.cascade.scorer, heads=None, probe=None, cascade=None)


def run_calibration(
    plan: CalibrationPlan,
    inference: InferenceSettings,
    *,
    command: str,
    model: ModelClient | None = None,
    on_done: Callable[[], None] | None = None,
    embedding: InferenceSettings | None = None,
) -> list[CalibratedPack]:
    """Score the split through the server ``inference`` names (and ``embedding``, the
    embedding server of embedding_probe packs when it is another), fit, write each pack.

    Raises:
        ServerUnreachable: the server cannot be reached or does not serve the model.
        TooFewPositives: after scoring (inference errors drop items), a category asked for has
            too few items, or no category could be fitted; nothing is written then.
    """
    runs = asyncio.run(_score(plan, (inference, embedding), model, on_done))
    created = datetime.now(UTC).replace(microsecond=0)
    done = []
    for target, (results, free) in zip(plan.packs, runs, strict=True):
        name = _model_name(scored_policy(target.policy, plan.request), inference, embedding)
        done.append(_fit_pack(plan, target, results, free, name, created, command))
    if not any(fit.fitted for pack in done for fit in pack.fits):
        raise TooFewPositives(
            f"{plan.data}: after scoring, no category has {plan.request.min_positives} positives and "
            "negatives with scores; nothing written"
        )
    written = []
    rewrite = cascade_pack_text if plan.request.cascade else calibrated_pack_text
    for pack in done:
        text, reformatted = rewrite(pack.target.source, pack.fits, pack.provenance)
        pack.target.out.parent.mkdir(parents=True, exist_ok=True)
        _place_heads(pack.target)
        pack.target.out.write_text(text, encoding="utf-8")
        _check_written(pack, cascade=plan.request.cascade)
        written.append(dataclasses.replace(pack, reformatted_lines=reformatted))
    return written


async def _score(
    plan: CalibrationPlan,
    servers: tuple[InferenceSettings, InferenceSettings | None],
    model: ModelClient | None,
    on_done: Callable[[], None] | None,
) -> list[tuple[list[ItemResult], list[ItemResult]]]:
    settings, embedding = servers
    if model is None:
        roles = model_roles(scored_policy(t.policy, plan.request) for t in plan.packs)
        async with offline_client(settings, embedding, roles) as client:
            return await _score_with(plan, client, settings.max_inflight, on_done)
    return await _score_with(plan, model, settings.max_inflight, on_done)


def _model_name(policy: Policy, settings: InferenceSettings, embedding: InferenceSettings | None) -> str:
    return embedding.model if embedding is not None and uses_embeddings(policy) else settings.model


async def _score_with(
    plan: CalibrationPlan, model: ModelClient, concurrency: int, on_done: Callable[[], None] | None
) -> list[tuple[list[ItemResult], list[ItemResult]]]:
    runs = []
    for target in plan.packs:
        policy = scored_policy(target.policy, plan.request)
        [results] = await run_packs([policy], target.items, model, concurrency=concurrency, on_done=on_done)
        free: list[ItemResult] = []
        if plan.request.method == "contextual":
            items = content_free_items(policy.content_type)
            [free] = await run_packs([policy], items, model, concurrency=concurrency, on_done=on_done)
        runs.append((results, free))
    return runs


def _fit_pack(
    plan: CalibrationPlan,
    target: PackTarget,
    results: list[ItemResult],
    content_free: list[ItemResult],
    model_name: str,
    created: datetime,
    command: str,
) -> CalibratedPack:
    request, policy = plan.request, scored_policy(target.policy, plan.request)
    scored = [r for r in results if r.scored]
    free_scored = [r for r in content_free if r.scored]
    chosen = request.categories or policy.category_ids
    fits = []
    for category in policy.category_ids:
        if category not in chosen:
            continue
        fit = fit_category(
            policy, category, scored, method=request.method, targets=request.targets,
            content_free=[r.scores.get(category, 0.0) for r in free_scored],
            min_positives=request.min_positives,
        )  # fmt: skip
        if category in request.categories and not fit.fitted:
            raise TooFewPositives(
                _too_few(policy, category, fit.positives, fit.negatives, request, plan.data)
            )
        fits.append(fit)
    provenance = CalibrationProvenance(
        dataset=plan.data.name,
        dataset_sha256=plan.dataset_sha256,
        items=len(target.items),
        scored_items=len(scored),
        model=model_name,
        scorer=policy.scorer,
        created_at=created,
        method=request.method,
        review_recall=request.targets.review_recall,
        reject_precision=request.targets.reject_precision,
        categories=tuple(f.category for f in fits if f.fitted),
        tool=f"streamproc {package_version('streamproc')}",
        command=command,
    )
    return CalibratedPack(
        target,
        fits,
        provenance,
        pre_rule_decided=sum(1 for r in results if r.error is None and not r.scores),
        errors=sum(1 for r in results if r.error is not None),
        reformatted_lines=0,
    )


def _place_heads(target: PackTarget) -> None:
    """A copy of the pack's heads file beside the written pack, which names it by a relative path.

    Raises:
        ConfigError: another file of that name is there already.
    """
    heads = target.policy.heads
    if heads is None:
        return
    source, copy = target.source.parent / heads.file, target.out.parent / heads.file
    if copy.exists():
        if hashlib.sha256(copy.read_bytes()).hexdigest() != heads.sha256:
            raise ConfigError(
                f"{copy} exists and is not the heads {target.source} names; choose another --out"
            )
        return
    shutil.copyfile(source, copy)


def _check_written(pack: CalibratedPack, *, cascade: bool) -> None:
    """The written file loads as a pack with exactly the fitted thresholds and calibrations
    (with the fitted cascade calibrations, for a ``cascade`` fit)."""
    written = load_pack(pack.target.out)
    if cascade:
        second = dict(written.cascade.calibration) if written.cascade is not None else {}
        for fit in pack.fits:
            if fit.fitted and second.get(fit.category) != fit.calibration:
                raise ConfigError(
                    f"{pack.target.out}: cascade.calibration.{fit.category} reads back as "
                    f"{second.get(fit.category)}, not {fit.calibration}; please report this"
                )
        return
    by_id = {c.id: c for c in written.categories}
    for fit in pack.fits:
        category = by_id[fit.category]
        if (category.thresholds, category.calibration) != (fit.new, fit.calibration):
            raise ConfigError(
                f"{pack.target.out}: category {fit.category} reads back as {category.thresholds}, "
                f"{category.calibration}, not {fit.new}, {fit.calibration}; please report this"
            )
