"""`streamproc calibrate` end to end with a fake model: the written pack, its YAML, the decision
path reading it, `policy check` and `eval --compare` showing it, and the refusals."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streamproc.cli import cli
from streamproc.config import InferenceSettings
from streamproc.decision import evaluate
from streamproc.evaluation import InPackCategory, load_dataset, plan_evaluation, run_evaluation
from streamproc.evaluation.calibrate import Targets
from streamproc.evaluation.calibration_command import (
    CalibratedPack,
    CalibrationRequest,
    TooFewPositives,
    plan_calibration,
    raw_policy,
    run_calibration,
)
from streamproc.evaluation.content_free import content_free_items
from streamproc.evaluation.pack_yaml import calibrated_pack_text
from streamproc.inference.protocol import ModelAnswer, ModelRequest, TokenChoice
from streamproc.policy import load_pack
from streamproc.policy.calibration import calibrated_scores
from streamproc.policy.model import ContextualCalibration, IsotonicCalibration, PlattCalibration
from streamproc.policy.rules import CompiledRules
from tests.factories import POLICIES, copy_shipped_packs, label_pack, listing_dict

LISTINGS = POLICIES / "listings.yaml"
VIDEOS = POLICIES / "videos.yaml"
SETTINGS = InferenceSettings(base_url="http://model.invalid/v1", model="fake-model")
#: The listings pack's letters: A counterfeit .. F spam, N safe.
LETTER = {"counterfeit": "A", "spam": "F"}


def _dataset(path: Path, spam: int = 8, counterfeit: int = 8, clean: int = 16) -> Path:
    """Listings no pre-rule decides: the titles tell the fake model what each one is."""
    truths = [["spam"]] * spam + [["counterfeit"]] * counterfeit + [[]] * clean
    lines = [
        {"content_type": "listing", "true_categories": truth,
         "event": listing_dict(listing_id=f"L-{n}", title=f"Synthetic item {n}", attributes={})}
        for n, truth in enumerate(truths)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


class TruthfulishModel:
    """Puts weight on the letters of an item's true categories, with noise that makes the two
    classes overlap; content-free items get a fixed answer."""

    def __init__(self, truths: dict[str, list[str]]) -> None:
        self.truths = truths

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        text = json.dumps(request.body)
        match = re.search(r"Synthetic item (\d+)", text)
        rng = random.Random(match[1] if match else "content-free")
        weights = {letter: 0.05 + 0.2 * rng.random() for letter in "ABCDEFN"}
        weights["N"] = 1.0
        for category in self.truths.get(match[1], []) if match else []:
            weights[LETTER[category]] += 1.5 * rng.random()
        if match is None:
            weights["F"] = 0.6  # a prior for spam on items that say nothing
        total = sum(weights.values())
        top = tuple(sorted(((k, math.log(v / total)) for k, v in weights.items()), key=lambda x: -x[1]))
        return ModelAnswer(top[0][0], (TokenChoice(top[0][0], top[0][1], top),), 10, 1)


def _model(data: Path) -> TruthfulishModel:
    return TruthfulishModel(
        {i.event.content_id.split("-")[1]: list(i.true_categories) for i in load_dataset(data)}
    )


def _label_listings(tmp_path: Path) -> Path:
    """The shipped listings pack scored with ``label_logprob``: TruthfulishModel answers label letters."""
    return label_pack(LISTINGS, tmp_path / "label-packs")


def _calibrate(tmp_path: Path, method: str = "platt", **request: Any) -> tuple[Path, list[CalibratedPack]]:
    data = _dataset(tmp_path / "calibration.jsonl")
    plan = plan_calibration(
        [_label_listings(tmp_path)],
        data,
        tmp_path / "listings-calibrated.yaml",
        CalibrationRequest(method, Targets(0.8, 0.95), **request),  # type: ignore[arg-type]
    )
    return data, run_calibration(plan, SETTINGS, command="streamproc calibrate (test)", model=_model(data))


@pytest.mark.parametrize("method", ["none", "platt", "isotonic", "contextual"])
def test_calibrate_fits_the_categories_with_enough_labels_and_writes_a_pack_that_loads(
    tmp_path: Path, method: str
) -> None:
    data, [pack] = _calibrate(tmp_path, method)
    fits = {f.category: f for f in pack.fits}
    assert {c for c, f in fits.items() if f.fitted} == {"counterfeit", "spam"}
    assert (fits["spam"].positives, fits["spam"].negatives) == (8, 24)
    assert "kept: 0 positives" in fits["adult"].note
    written = load_pack(pack.target.out)
    shipped = load_pack(LISTINGS)
    for category, before in zip(written.categories, shipped.categories, strict=True):
        fit = fits[category.id]
        assert category.thresholds == fit.new and category.calibration == fit.calibration
        if not fit.fitted:  # untouched
            assert (category.thresholds, category.calibration) == (before.thresholds, None)
        else:  # the targets hold on the split, at the thresholds written
            assert fit.review is not None and fit.review.recall >= 0.8
            assert fit.reject is not None and (
                fit.reject.precision >= 0.95 or category.thresholds.reject == 1.0
            )
    kinds = {"none": type(None), "platt": PlattCalibration, "isotonic": IsotonicCalibration,
             "contextual": ContextualCalibration}  # fmt: skip
    assert isinstance(written.categories[5].calibration, kinds[method])
    provenance = written.calibration_provenance
    assert provenance is not None
    assert (provenance.dataset, provenance.dataset_sha256) == (
        "calibration.jsonl", hashlib.sha256(data.read_bytes()).hexdigest()
    )  # fmt: skip
    assert (provenance.items, provenance.scored_items, provenance.model) == (32, 32, "fake-model")
    assert (provenance.method, provenance.categories) == (method, ("counterfeit", "spam"))
    assert provenance.tool.startswith("streamproc ") and provenance.command == "streamproc calibrate (test)"


def test_contextual_bias_is_the_score_of_content_free_items(tmp_path: Path) -> None:
    _, [pack] = _calibrate(tmp_path, "contextual")
    spam = next(f for f in pack.fits if f.category == "spam")
    assert isinstance(spam.calibration, ContextualCalibration)
    # Every content-free item gets the same fixed answer: F weighs 0.6 against N's 1.0 and the rest.
    assert 0.2 < spam.calibration.bias < 0.4
    assert [i.event.content_id for i in content_free_items("video")][:2] == [
        "content-free-1",
        "content-free-2",
    ]


def test_the_decision_path_reads_the_calibrated_scores(tmp_path: Path) -> None:
    data, [pack] = _calibrate(tmp_path, "platt")
    calibrated = load_pack(pack.target.out)
    model = _model(data)
    for item in load_dataset(data)[:10]:
        outcome, scores, _ = asyncio.run(
            evaluate(calibrated, CompiledRules.compile(calibrated), item.event, model)
        )
        _, raw, _ = asyncio.run(
            evaluate(raw_policy(calibrated), CompiledRules.compile(calibrated), item.event, model)
        )
        assert scores == pytest.approx(calibrated_scores(calibrated, raw))
        spam = scores["spam"]
        thresholds = calibrated.categories[5].thresholds
        if spam >= thresholds.reject:
            assert outcome.decision == "reject"
        elif outcome.decision == "approve":
            assert spam < thresholds.review


# --- the YAML written -------------------------------------------------------------------------


def _comments(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("#") or " # " in line]


@pytest.mark.parametrize("pack", [LISTINGS, VIDEOS, *sorted((POLICIES / "candidates").glob("*.yaml"))])
def test_the_rewrite_keeps_comments_order_and_layout_and_changes_only_what_was_fitted(
    tmp_path: Path, pack: Path
) -> None:
    _, [done] = _calibrate(tmp_path, "isotonic")
    policy = load_pack(pack)
    fits = [f for f in done.fits if f.category in policy.category_ids]
    text, reformatted = calibrated_pack_text(pack, fits, done.provenance)
    original = pack.read_text()
    assert reformatted == 0
    assert _comments(text) == _comments(original)
    removed = [line for line in original.splitlines() if line not in text.splitlines()]
    # A pack calibrated before (the shipped ones) gets its calibration_provenance replaced.
    provenance = original.partition("\ncalibration_provenance:\n")[2].splitlines()
    assert all("thresholds:" in line or line in provenance for line in removed), removed
    keys = [line.split(":")[0] for line in text.splitlines() if re.match(r"^[a-z_]+:", line)]
    before = [line.split(":")[0] for line in original.splitlines() if re.match(r"^[a-z_]+:", line)]
    assert keys == [*(k for k in before if k != "calibration_provenance"), "calibration_provenance"]
    beside = copy_shipped_packs(tmp_path / "packs")  # with the heads a shipped pack names
    (beside / "out.yaml").write_text(text)
    assert load_pack(beside / "out.yaml").name == policy.name


def test_tiny_floats_are_written_as_floats_every_yaml_reader_reads(tmp_path: Path) -> None:
    _, [done] = _calibrate(tmp_path, "contextual")
    fit = next(f for f in done.fits if f.category == "spam")
    tiny = type(fit)(
        **{**fit.__dict__, "calibration": ContextualCalibration(method="contextual", bias=1e-06)}
    )
    text, _ = calibrated_pack_text(LISTINGS, [tiny], done.provenance)
    assert "bias: 1.0e-06" in text
    beside = copy_shipped_packs(tmp_path / "packs")
    (beside / "tiny.yaml").write_text(text)
    assert load_pack(beside / "tiny.yaml").categories[5].calibration == tiny.calibration


# --- the command line -------------------------------------------------------------------------


def test_policy_check_shows_calibration_and_provenance(tmp_path: Path) -> None:
    _, [pack] = _calibrate(tmp_path, "platt")
    plain = tmp_path / "plain.yaml"  # the listings pack without heads or the shipped provenance
    plain.write_text(
        label_pack(LISTINGS, tmp_path / "label").read_text().partition("calibration_provenance:")[0]
    )
    result = CliRunner().invoke(cli, ["policy", "check", str(pack.target.out), str(LISTINGS), str(plain)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"ok  {pack.target.out}: marketplace-listings@")
    assert lines[1].startswith("    calibrated ") and "method platt, targets review recall 0.8 / reject "
    assert (
        "on calibration.jsonl (sha256 " in lines[1] and "32 items, 32 scored), model fake-model" in lines[1]
    )
    spam = load_pack(pack.target.out).categories[5]
    calibration = spam.calibration
    assert isinstance(calibration, PlattCalibration)
    shipped_at = next(n for n, line in enumerate(lines) if line.startswith(f"ok  {LISTINGS}:"))
    assert (
        f"    spam: review {spam.thresholds.review:g}, reject {spam.thresholds.reject:g}, "
        f"calibration platt a={calibration.a:.4g} b={calibration.b:.4g}"
    ) in lines[:shipped_at]
    assert not any("adult" in line for line in lines[:shipped_at])  # neither fitted nor calibrated
    # The shipped pack: its thresholds fitted (method none) on its scorer's scores.
    assert lines[shipped_at + 1].startswith("    calibrated ") and "method none" in lines[shipped_at + 1]
    assert lines[shipped_at + 1].endswith(f"scorer {load_pack(LISTINGS).scorer}")
    adult = load_pack(LISTINGS).categories[2].thresholds
    assert f"    adult: review {adult.review:g}, reject {adult.reject:g}, calibration none" in lines
    assert lines[-1].startswith(f"ok  {plain}:")  # a plain pack: one line, as before
    assert lines[-2].startswith("    ")


def test_eval_compare_of_shipped_and_calibrated_shows_the_provenance(tmp_path: Path) -> None:
    data, [pack] = _calibrate(tmp_path, "platt")
    plan = plan_evaluation([_label_listings(tmp_path)], data, tmp_path / "cmp", pack.target.out)
    [written] = run_evaluation(plan, SETTINGS, model=_model(data))
    base, other = written.report.packs
    # The shipped pack's own provenance (its channel calibration), the calibrated pack's new one.
    assert base.version != other.version and base.calibration == load_pack(LISTINGS).calibration_provenance
    assert (
        other.calibration is not None and other.calibration.dataset_sha256 == pack.provenance.dataset_sha256
    )
    markdown = (tmp_path / "cmp" / "report.md").read_text()
    assert "Calibrated on `calibration.jsonl`" in markdown
    spam = other.categories["spam"]
    assert isinstance(spam, InPackCategory)
    fit = next(f for f in pack.fits if f.category == "spam")
    assert spam.review_threshold == fit.new.review
    # The report reads the calibrated scores: the review-threshold figures are the fit's.
    assert fit.review is not None
    assert (spam.model_at_review_threshold.precision, spam.model_at_review_threshold.recall) == pytest.approx(
        (fit.review.precision, fit.review.recall)
    )


def test_cli_refuses_a_category_with_too_few_positives_in_one_line(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "d.jsonl", spam=3)
    args = ["calibrate", "--policy", str(LISTINGS), "--data", str(data), "--out", str(tmp_path / "o.yaml")]
    result = CliRunner().invoke(cli, [*args, "--category", "spam"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: {data}: marketplace-listings category spam has 3 positives and 24 negatives the model "
        "scores, fewer than --min-positives 5; add labeled items"
    ]
    # Without --category the others are fitted and spam kept; with no category fittable, refused.
    none = CliRunner().invoke(cli, [*args, "--min-positives", "9"])
    assert none.exit_code == 2 and "no category has 9 positives and 9 negatives" in none.output
    assert not (tmp_path / "o.yaml").exists()


def test_pre_rule_decided_items_are_left_out_before_counting(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "d.jsonl", spam=6)
    lines = data.read_text().splitlines()
    # Two spam items now hit the off-platform-contact pre-rule: 4 positives remain for the model.
    lines[:2] = [line.replace("Stoneware", "write me on whatsapp") for line in lines[:2]]
    data.write_text("\n".join(lines) + "\n")
    request = CalibrationRequest("none", Targets(0.8, 0.95), categories=("spam",))
    with pytest.raises(TooFewPositives, match="category spam has 4 positives"):
        plan_calibration([LISTINGS], data, tmp_path / "o.yaml", request)


def test_cli_names_the_extra_when_the_fitting_libraries_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a)
    )
    data = _dataset(tmp_path / "d.jsonl")
    result = CliRunner().invoke(
        cli, ["calibrate", "--policy", str(LISTINGS), "--data", str(data), "--out", str(tmp_path / "o.yaml")]
    )
    assert result.exit_code == 2
    assert result.output.strip() == (
        "Error: streamproc calibrate needs scikit-learn and ruamel.yaml, which are not installed; "
        "install them with: pip install 'streamproc[calibrate]'"
    )


def test_cli_checks_out_and_categories_before_any_model_call(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "d.jsonl")
    base = ["calibrate", "--data", str(data)]
    two = CliRunner().invoke(
        cli, [*base, "--policy", str(LISTINGS), "--policy", str(VIDEOS), "--out", "x.yaml"]
    )
    assert two.exit_code == 2 and "--out x.yaml is one file; give a folder for 2 packs" in two.output
    over = CliRunner().invoke(cli, [*base, "--policy", str(LISTINGS), "--out", str(LISTINGS)])
    assert over.exit_code == 2 and "would overwrite" in over.output
    unknown = CliRunner().invoke(
        cli, [*base, "--policy", str(LISTINGS), "--out", str(tmp_path), "--category", "weapons"]
    )
    assert unknown.exit_code == 2 and "--category weapons: no such category" in unknown.output
    server = CliRunner().invoke(
        cli, [*base, "--policy", str(LISTINGS), "--out", str(tmp_path), "--vllm-url", "http://127.0.0.1:9/v1"]
    )
    assert server.exit_code == 1 and "no model server answers at http://127.0.0.1:9/v1" in server.output


class _Client:
    """Stands in for open_router: the fake model behind an async context manager."""

    model: TruthfulishModel

    def __init__(self, settings: InferenceSettings, embedding: object, metrics: object) -> None:
        self.settings = settings

    async def __aenter__(self) -> TruthfulishModel:
        return self.model

    async def __aexit__(self, *exc: object) -> None:
        return None


def test_cli_prints_a_table_per_category_and_writes_the_pack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _dataset(tmp_path / "d.jsonl")
    _Client.model = _model(data)

    async def reachable(*args: object, **kwargs: object) -> None:
        return None

    monkeypatch.setattr("streamproc.evaluation.runner.check_server", reachable)
    monkeypatch.setattr("streamproc.evaluation.runner.open_router", _Client)
    out = tmp_path / "calibrated"
    listings = _label_listings(tmp_path)
    result = CliRunner().invoke(
        cli,
        ["calibrate", "--policy", str(listings), "--data", str(data), "--out", str(out), "--method", "platt",
         "--vllm-url", "http://model.invalid/v1", "--model-name", "fake-model"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    written = load_pack(out / "marketplace-listings.yaml")
    lines = result.output.splitlines()
    assert lines[0] == (
        f"marketplace-listings: {out / 'marketplace-listings.yaml'} (method platt, model fake-model; "
        "32 items, 32 scored and fitted on, 0 decided by a pre-rule and 0 inference errors left out)"
    )
    assert re.fullmatch(
        r"\| category +\| pos \| neg \| review +\| reject +\| calibration +\| P/R @review \| P/R @reject \|",
        lines[1],
    )
    spam = next(line for line in lines if line.startswith("| spam "))
    shipped = load_pack(LISTINGS).categories
    old, thresholds = shipped[5].thresholds, written.categories[5].thresholds
    assert f"| {old.review:g} → {thresholds.review:.4g}" in spam
    assert f"| {old.reject:g} → {thresholds.reject:.4g}" in spam
    assert "| 8   | 24  |" in spam and "platt a=" in spam
    adult = next(line for line in lines if line.startswith("| adult "))
    kept = shipped[2].thresholds.review
    assert "(kept)" in adult and f"| {kept:g} → {kept:.4g} " in adult
    assert "  adult: kept: 0 positives, 32 negatives scored; need 5 of each" in lines
    provenance = written.calibration_provenance
    assert provenance is not None and provenance.command == (
        f"streamproc calibrate --policy {listings} --data {data} --method platt --review-recall 0.8 "
        "--reject-precision 0.95 --min-positives 5"
    )


def _cascading_probe_pack(tmp_path: Path) -> Path:
    """The shipped probe listings pack with a cascade to the label scorer, which the fake speaks."""
    pack = copy_shipped_packs(tmp_path / "packs") / "listings.yaml"
    text = pack.read_text()
    pack.write_text(text + "cascade:\n  scorer: label_logprob\n  band: {low: 0.3, high: 0.7}\n")
    return pack


def test_calibrate_with_a_cascade_model_fits_the_cascade_scorer_and_keeps_the_thresholds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _dataset(tmp_path / "d.jsonl")
    _Client.model = _model(data)
    opened: list[InferenceSettings] = []

    async def reachable(*args: object, **kwargs: object) -> None:
        return None

    def client(settings: InferenceSettings, embedding: object, metrics: object) -> _Client:
        opened.append(settings)
        return _Client(settings, embedding, metrics)

    monkeypatch.setattr("streamproc.evaluation.runner.check_server", reachable)
    monkeypatch.setattr("streamproc.evaluation.runner.open_router", client)
    pack, out = _cascading_probe_pack(tmp_path), tmp_path / "cascade.yaml"
    result = CliRunner().invoke(
        cli,
        ["calibrate", "--policy", str(pack), "--data", str(data), "--out", str(out), "--method", "platt",
         "--vllm-url", "http://model.invalid/v1", "--cascade-model", "second"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [s.model for s in opened] == ["second"]
    assert "(cascade scorer label_logprob, method platt, model second;" in result.output
    assert re.search(r"\| category +\| pos \| neg \| calibration +\|", result.output)
    before, written = load_pack(pack), load_pack(out)
    assert [c.thresholds for c in written.categories] == [c.thresholds for c in before.categories]
    assert written.calibration_provenance == before.calibration_provenance
    assert written.cascade is not None and written.cascade.scorer == "label_logprob"
    calibrations = dict(written.cascade.calibration)
    assert set(calibrations) == {"counterfeit", "spam"}
    assert all(isinstance(c, PlattCalibration) for c in calibrations.values())
    provenance = written.cascade.calibration_provenance
    assert provenance is not None and (provenance.scorer, provenance.model) == ("label_logprob", "second")
    assert provenance.command.endswith("--min-positives 5 --cascade-model second")
    assert written.version != before.version
    assert (out.parent / "marketplace-listings.heads.json").read_bytes() == (
        pack.parent / "marketplace-listings.heads.json"
    ).read_bytes()  # beside the written pack, which names it


def test_calibrate_with_a_cascade_model_needs_a_cascade_scorer_and_a_method(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "d.jsonl")
    base = ["calibrate", "--data", str(data), "--out", str(tmp_path / "o.yaml"), "--cascade-model", "second"]
    plain = CliRunner().invoke(cli, [*base, "--policy", str(LISTINGS), "--method", "platt"])
    assert plain.exit_code == 2 and "has no cascade scorer; add cascade: {scorer: channel" in plain.output
    pack = _cascading_probe_pack(tmp_path)
    no_method = CliRunner().invoke(cli, [*base, "--policy", str(pack)])
    assert no_method.exit_code == 2 and "give --method platt, isotonic or contextual" in no_method.output
