"""Confusion counts and scores against scikit-learn on the same pairs."""

from __future__ import annotations

import random

import pytest

from streamproc.accuracy import Confusion, confusion_by_category, violation_confusion
from tests.sklearn_reference import sklearn_per_category, sklearn_violation

CATEGORIES = ["counterfeit", "prohibited_items", "adult", "spam"]


def random_pairs(seed: int, count: int) -> list[tuple[list[str], list[str], float]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        truth = [c for c in CATEGORIES if rng.random() < 0.2]
        predicted = [c for c in CATEGORIES if (c in truth) != (rng.random() < 0.15)]
        pairs.append((truth, predicted, rng.choice([1.0, 2.0, 10.0, 50.0])))
    return pairs


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scores_equal_scikit_learn(seed: int, weighted: bool) -> None:
    pairs = random_pairs(seed, 300)
    weights = [w if weighted else 1.0 for _, _, w in pairs]
    ours = confusion_by_category([(t, p, w) for (t, p, _), w in zip(pairs, weights, strict=True)], CATEGORIES)
    reference = sklearn_per_category([t for t, _, _ in pairs], [p for _, p, _ in pairs], weights, CATEGORIES)
    for category in CATEGORIES:
        c = ours[category]
        tn, fp, fn, tp, precision, recall, f1 = reference[category]
        assert (c.tn, c.fp, c.fn, c.tp) == pytest.approx((tn, fp, fn, tp))
        assert (c.precision, c.recall, c.f1) == pytest.approx((precision, recall, f1))


def test_undefined_scores_are_zero_not_errors() -> None:
    empty = Confusion()
    assert (empty.precision, empty.recall, empty.f1, empty.total) == (0.0, 0.0, 0.0, 0.0)
    only_negatives = Confusion(tn=5)
    assert only_negatives.f1 == 0.0


def test_counts_land_in_the_right_cell() -> None:
    c = Confusion()
    c.add(truth=True, predicted=True)
    c.add(truth=False, predicted=True, weight=2)
    c.add(truth=True, predicted=False, weight=3)
    c.add(truth=False, predicted=False, weight=4)
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 2, 3, 4)
    assert c.precision == pytest.approx(1 / 3)
    assert c.recall == pytest.approx(1 / 4)
    assert c.f1 == pytest.approx(2 / (2 + 2 + 3))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_violation_equals_scikit_learn_binary(seed: int, weighted: bool) -> None:
    rng = random.Random(seed)
    rows = [
        (truth, rng.choice(["approve", "approve", "review", "reject"]), w if weighted else 1.0)
        for truth, _, w in random_pairs(seed, 300)
    ]
    ours = violation_confusion(rows)  # type: ignore[arg-type]
    tn, fp, fn, tp, precision, recall, f1 = sklearn_violation(
        [t for t, _, _ in rows], [d for _, d, _ in rows], [w for _, _, w in rows]
    )
    assert (ours.tn, ours.fp, ours.fn, ours.tp) == pytest.approx((tn, fp, fn, tp))
    assert (ours.precision, ours.recall, ours.f1) == pytest.approx((precision, recall, f1))
    assert tp > 0 and fp > 0 and fn > 0 and tn > 0  # every cell exercised


def test_flagged_means_not_approved_and_violating_means_any_category() -> None:
    c = violation_confusion([([], "review", 1.0), (["spam"], "reject", 2.0), (["spam"], "approve", 3.0)])
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 3, 0)
