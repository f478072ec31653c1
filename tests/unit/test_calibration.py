"""Calibration: the maths applied in the worker, the fitting against scikit-learn, thresholds on
their targets, pack validation of calibration blocks."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.isotonic import IsotonicRegression

from streamproc.errors import ConfigError
from streamproc.evaluation.calibrate import Targets, fit_contextual, fit_isotonic, fit_platt, fit_thresholds
from streamproc.policy import Thresholds, load_pack
from streamproc.policy.calibration import EPSILON, apply_calibration, calibrated_scores, logit
from streamproc.policy.model import ContextualCalibration, IsotonicCalibration, PlattCalibration
from tests.factories import copy_shipped_packs, default_policy

ROOT = Path(__file__).resolve().parents[2]
LISTINGS = ROOT / "policies" / "listings.yaml"


def _case(seed: int, n: int = 200) -> tuple[list[float], list[bool]]:
    """Scores that say something about the labels, with overlap (as a weak model's do)."""
    rng = random.Random(seed)
    labels = [rng.random() < 0.3 for _ in range(n)]
    scores = [min(1.0, max(0.0, rng.betavariate(2, 5) + (0.35 if y else 0.0))) for y in labels]
    return scores, labels


# --- applying ------------------------------------------------------------------------------------


def test_platt_is_a_sigmoid_of_the_logit_and_the_identity_at_one_zero() -> None:
    identity = PlattCalibration(method="platt", a=1.0, b=0.0)
    for p in (0.01, 0.2, 0.5, 0.93):
        assert apply_calibration(identity, p) == pytest.approx(p)
    steep = PlattCalibration(method="platt", a=2.0, b=-1.0)
    assert apply_calibration(steep, 0.7) == pytest.approx(1 / (1 + math.exp(-(2 * math.log(0.7 / 0.3) - 1))))
    # 0 and 1 are clipped before the logit, so they stay finite and ordered.
    assert 0.0 < apply_calibration(steep, 0.0) < apply_calibration(steep, 0.001)
    assert apply_calibration(steep, 1.0) == pytest.approx(1 / (1 + math.exp(-(2 * logit(1 - EPSILON) - 1))))


def test_isotonic_interpolates_between_its_points_and_clips_outside() -> None:
    iso = IsotonicCalibration(method="isotonic", points=((0.1, 0.0), (0.3, 0.2), (0.7, 0.9)))
    assert apply_calibration(iso, 0.0) == 0.0
    assert apply_calibration(iso, 0.2) == pytest.approx(0.1)
    assert apply_calibration(iso, 0.3) == pytest.approx(0.2)
    assert apply_calibration(iso, 0.5) == pytest.approx(0.55)
    assert apply_calibration(iso, 1.0) == 0.9
    xs = np.linspace(0, 1, 101)
    expected = np.interp(xs, [0.1, 0.3, 0.7], [0.0, 0.2, 0.9])
    assert [apply_calibration(iso, float(x)) for x in xs] == pytest.approx(list(expected))


def test_contextual_moves_the_content_free_score_to_one_half() -> None:
    ctx = ContextualCalibration(method="contextual", bias=0.2)
    assert apply_calibration(ctx, 0.2) == pytest.approx(0.5)
    p = 0.6
    assert apply_calibration(ctx, p) == pytest.approx((p / 0.2) / (p / 0.2 + (1 - p) / 0.8))
    assert (apply_calibration(ctx, 0.0), apply_calibration(ctx, 1.0)) == (0.0, 1.0)
    values = [apply_calibration(ctx, x / 100) for x in range(101)]
    assert values == sorted(values)


def test_categories_without_a_block_keep_their_scores() -> None:
    plain = default_policy("listing")
    scores = {c: 0.1 * i for i, c in enumerate(plain.category_ids)}
    assert calibrated_scores(plain, scores) == scores
    platt = PlattCalibration(method="platt", a=3.0, b=0.5)
    calibrated = plain.with_calibration({"spam": platt})
    out = calibrated_scores(calibrated, scores)
    assert out["spam"] == pytest.approx(apply_calibration(platt, scores["spam"]))
    assert {c: s for c, s in out.items() if c != "spam"} == {c: s for c, s in scores.items() if c != "spam"}


# --- fitting, against scikit-learn ---------------------------------------------------------------


class _LogitOfScore(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A 'classifier' whose decision function is logit(score): what CalibratedClassifierCV's
    sigmoid method then fits is Platt scaling on logit(score)."""

    def fit(self, x: Any, y: Any) -> _LogitOfScore:
        self.classes_ = np.array([False, True])
        return self

    def decision_function(self, x: Any) -> Any:
        return np.array([logit(float(s)) for s in np.asarray(x)[:, 0]])

    def predict(self, x: Any) -> Any:
        return self.decision_function(x) > 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_platt_fit_matches_scikit_learn_sigmoid_calibration(seed: int) -> None:
    scores, labels = _case(seed)
    fitted = fit_platt(scores, labels)
    x = np.array(scores)[:, None]
    # ensemble=False: one calibrator over every item (the frozen estimator learns nothing per fold).
    reference = CalibratedClassifierCV(
        FrozenEstimator(_LogitOfScore().fit(x, labels)), method="sigmoid", ensemble=False
    )
    reference.fit(x, labels)
    expected = reference.predict_proba(x)[:, 1]
    ours = [apply_calibration(fitted, s) for s in scores]
    assert ours == pytest.approx(list(expected), abs=1e-5)
    assert fitted.a > 0  # higher scores mean more violations here


def test_platt_fit_stays_finite_when_the_classes_are_separable() -> None:
    scores = [0.1, 0.12, 0.2, 0.25, 0.3, 0.7, 0.75, 0.8, 0.9, 0.95]
    fitted = fit_platt(scores, [s > 0.5 for s in scores])
    assert math.isfinite(fitted.a) and math.isfinite(fitted.b) and fitted.a > 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_isotonic_fit_matches_scikit_learn(seed: int) -> None:
    scores, labels = _case(seed)
    fitted = fit_isotonic(scores, labels)
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(scores, labels)
    probe = [*scores, 0.0, 0.5, 1.0]
    expected = reference.predict(probe)
    assert [apply_calibration(fitted, s) for s in probe] == pytest.approx(list(expected), abs=1e-5)


def test_isotonic_fit_needs_two_distinct_scores() -> None:
    with pytest.raises(ConfigError, match="same score"):
        fit_isotonic([0.3] * 6, [True, False] * 3)


def test_contextual_bias_is_the_mean_content_free_score() -> None:
    assert fit_contextual([0.1, 0.2, 0.3]).bias == pytest.approx(0.2)
    assert fit_contextual([0.0, 0.0]).bias == pytest.approx(1e-6)  # kept inside (0, 1)
    with pytest.raises(ConfigError, match="no content-free item"):
        fit_contextual([])


# --- thresholds on their targets -----------------------------------------------------------------


def _precision_recall(scores: list[float], labels: list[bool], threshold: float) -> tuple[float, float]:
    flagged = [y for s, y in zip(scores, labels, strict=True) if s >= threshold]
    precision = sum(flagged) / len(flagged) if flagged else 0.0
    return precision, sum(flagged) / sum(labels)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("recall", "precision"), [(0.8, 0.95), (0.9, 0.8), (0.5, 0.6)])
def test_fitted_thresholds_are_the_extreme_ones_that_meet_the_targets(
    seed: int, recall: float, precision: float
) -> None:
    scores, labels = _case(seed)
    shipped = Thresholds(reject=0.85, review=0.5)
    fitted, notes = fit_thresholds(scores, labels, Targets(recall, precision), shipped)
    distinct = sorted(set(scores))
    review_ok = [t for t in distinct if _precision_recall(scores, labels, t)[1] >= recall]
    reject_ok = [t for t in distinct if _precision_recall(scores, labels, t)[0] >= precision]
    if reject_ok:
        # The stored thresholds may be rounded down, never across another score.
        assert _precision_recall(scores, labels, fitted.reject)[0] >= precision
        assert [s >= fitted.reject for s in scores] == [s >= min(reject_ok) for s in scores]
    else:
        assert fitted.reject > max(scores) and "no threshold reaches precision" in notes[0]
    if max(review_ok) <= fitted.reject:
        assert _precision_recall(scores, labels, fitted.review)[1] >= recall
        assert [s >= fitted.review for s in scores] == [s >= max(review_ok) for s in scores]
    else:  # clamped: review never above reject
        assert fitted.review == fitted.reject and any("lowered to reject" in n for n in notes)


def test_an_unreachable_precision_keeps_reject_above_every_score() -> None:
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    labels = [True, False, True, False, True, False]
    fitted, notes = fit_thresholds(scores, labels, Targets(0.8, 0.95), Thresholds(reject=0.85, review=0.5))
    assert fitted.reject == 0.85  # the shipped one is already above every score
    assert fitted.review == 0.1  # recall 0.8 of 3 positives needs all three
    fitted, _ = fit_thresholds(
        [*scores, 0.9], [*labels, False], Targets(0.8, 0.95), Thresholds(reject=0.85, review=0.5)
    )
    assert fitted.reject == 1.0 and notes


# --- the pack file ---------------------------------------------------------------------------------


def _pack_with(tmp_path: Path, block: str) -> Path:
    """The listings pack with ``block`` added after the first category's thresholds (beside the
    heads it names)."""
    text = LISTINGS.read_text()
    category_line = next(line for line in text.splitlines() if line.startswith("    thresholds: {"))
    copy_shipped_packs(tmp_path)
    path = tmp_path / "pack.yaml"
    path.write_text(text.replace(category_line, f"{category_line}\n{block}", 1))
    return path


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        ("    calibration: {method: magic, a: 1}", "calibration: Input tag 'magic' found using 'method'"),
        ("    calibration: {method: platt, a: 1.0}", "calibration.platt.b: Field required"),
        ("    calibration: {method: platt, a: .nan, b: 0}", "platt.a: Input should be a finite number"),
        ("    calibration: {method: platt, a: 1, b: 0, c: 2}", "platt.c: Extra inputs are not permitted"),
        ("    calibration: {method: contextual, bias: 1.0}", "contextual.bias: Input should be less than 1"),
        ("    calibration: {method: isotonic, points: [[0.5, 0.2], [0.4, 0.3]]}", "strictly increasing"),
        ("    calibration: {method: isotonic, points: [[0.1, 0.5], [0.4, 0.3]]}", "non-decreasing"),
        ("    calibration: {method: isotonic, points: [[0.1, 0.5]]}", "needs at least 2 points, got 1"),
        ("    calibration: {method: isotonic, points: [[0.1, 1.5], [0.2, 0.6]]}", "points.0.1: Input should"),
    ],
)  # fmt: skip
def test_a_bad_calibration_block_is_one_line_naming_file_line_and_field(
    tmp_path: Path, block: str, problem: str
) -> None:
    path = _pack_with(tmp_path, block)
    line = path.read_text().splitlines().index(block) + 1
    with pytest.raises(ConfigError) as caught:
        load_pack(path)
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"{path}:{line}: categories.0.calibration"), message
    assert problem.casefold() in message.casefold(), message


PROVENANCE = """calibration_provenance:
  dataset: calibration.jsonl
  dataset_sha256: {sha}
  items: 40
  scored_items: {scored}
  model: smollm2
  scorer: label_logprob
  created_at: 2026-11-29T12:00:00+00:00
  method: platt
  review_recall: 0.8
  reject_precision: 0.95
  categories: [{categories}]
  tool: streamproc 0.1.0
  command: streamproc calibrate --method platt
"""


def _with_provenance(tmp_path: Path, sha: str = "a" * 64, scored: int = 30, categories: str = "spam") -> Path:
    path = _pack_with(tmp_path, "    calibration: {method: platt, a: 1.5, b: -0.2}")
    shipped, found, _ = path.read_text().partition("\ncalibration_provenance:\n")  # replaced by this one
    assert found
    path.write_text(shipped + "\n" + PROVENANCE.format(sha=sha, scored=scored, categories=categories))
    return path


def test_provenance_loads_and_stays_out_of_the_version(tmp_path: Path) -> None:
    pack = load_pack(_with_provenance(tmp_path))
    assert pack.categories[0].calibration == PlattCalibration(method="platt", a=1.5, b=-0.2)
    provenance = pack.calibration_provenance
    assert provenance is not None and provenance.created_at.isoformat() == "2026-11-29T12:00:00+00:00"
    (tmp_path / "other").mkdir()
    other = load_pack(_with_provenance(tmp_path / "other", scored=31))
    assert other.version == pack.version  # where thresholds came from is not decision logic
    assert pack.version != load_pack(LISTINGS).version  # the calibration block is


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"sha": "xyz"}, "calibration_provenance.dataset_sha256: String should match pattern"),
        ({"scored": 41}, "scored_items (41) exceeds items (40)"),
        ({"categories": "spam, weapons"}, "calibration_provenance.categories names ['weapons']"),
    ],
)
def test_bad_provenance_is_one_line(tmp_path: Path, kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_pack(_with_provenance(tmp_path, **kwargs))
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and problem in message, message
