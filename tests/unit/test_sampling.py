"""Audit sampling: the probability per stratum, the boost near thresholds, the cap, and a
draw that is stable per verdict and selects the share it promises."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from streamproc.config import AuditSettings, Settings
from streamproc.decision import Outcome, decide_on_error
from streamproc.decision.sampling import audit_probability, audit_sample, drawn, score_band, unit_hash
from streamproc.errors import ConfigError
from streamproc.policy import Thresholds, load_pack
from streamproc.policy.model import AuditFocus
from streamproc.schemas import DecidedBy, Verdict
from tests.factories import decided_verdict, default_policy

POLICY = default_policy("listing").with_thresholds(
    {c: Thresholds(reject=0.8, review=0.5) for c in default_policy("listing").category_ids}
)
DEFAULTS = AuditSettings()  # base 0.01; review and reject 0.05; boost 5 within 0.05


def verdict(
    scores: dict[str, float],
    *,
    outcome: Outcome | None = None,
    listing_id: str = "L-1",
    now: datetime | None = None,
) -> Verdict:
    return decided_verdict(
        POLICY, scores, outcome=outcome, now=now or datetime.now(UTC), listing_id=listing_id
    )


@pytest.mark.parametrize(
    ("scores", "probability", "stratum"),
    [
        ({"counterfeit": 0.1}, 0.01, "approve/none/0.1-0.2"),  # base rate
        ({"counterfeit": 0.65}, 0.05, "review/counterfeit/0.6-0.7"),  # decision rate
        ({"spam": 0.95, "counterfeit": 0.2}, 0.05, "reject/spam/0.9-1.0"),
        ({"adult": 1.0}, 0.05, "reject/adult/0.9-1.0"),  # 1.0 is in the top band
        ({}, 0.01, "approve/none/unscored"),
    ],
)
def test_probability_and_stratum_per_decision(
    scores: dict[str, float], probability: float, stratum: str
) -> None:
    draw = audit_probability(verdict(scores), POLICY, DEFAULTS)
    assert draw.probability == pytest.approx(probability)
    assert draw.stratum == stratum


def test_an_inference_error_is_a_review_without_scores() -> None:
    draw = audit_probability(verdict({}, outcome=decide_on_error("timeout")), POLICY, DEFAULTS)
    assert draw.probability == pytest.approx(0.05)
    assert draw.stratum == "review/none/unscored"


def test_a_rule_decision_uses_the_rule_category() -> None:
    outcome = Outcome("review", DecidedBy(kind="rule", id="off-platform"), "SPAM", "", rule_category="spam")
    settings = AuditSettings(category_rates={"spam": 0.3})
    draw = audit_probability(verdict({}, outcome=outcome), POLICY, settings)
    assert draw.probability == pytest.approx(0.3)
    assert draw.stratum == "review/spam/unscored"


def test_category_rates_apply_to_every_flagged_category_with_a_default_for_others() -> None:
    scores = {"counterfeit": 0.9, "spam": 0.65}  # reject by counterfeit, spam flagged too
    assert audit_probability(
        verdict(scores), POLICY, AuditSettings(category_rates={"spam": 0.4})
    ).probability == pytest.approx(0.4)
    assert audit_probability(
        verdict(scores), POLICY, AuditSettings(category_rates={"spam": 0.02}, category_default_rate=0.2)
    ).probability == pytest.approx(0.2)  # counterfeit is not listed: the default applies
    # An approval flags nothing, so category rates do not lift it.
    assert audit_probability(
        verdict({"spam": 0.2}), POLICY, AuditSettings(category_default_rate=0.9)
    ).probability == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("score", "boosted", "probability"),
    [  # thresholds review 0.5, reject 0.8; base 0.01, review and reject 0.05, boost 5
        (0.44, False, 0.01),
        (0.45, True, 0.05),  # within the band below the review threshold
        (0.52, True, 0.25),
        (0.74, False, 0.05),
        (0.76, True, 0.25),  # within the band below the reject threshold
        (0.85, True, 0.25),
        (0.86, False, 0.05),
    ],
)
def test_boost_near_a_review_or_reject_threshold(score: float, boosted: bool, probability: float) -> None:
    v = verdict({"counterfeit": score})
    assert audit_probability(v, POLICY, DEFAULTS).probability == pytest.approx(probability)
    unboosted = max(DEFAULTS.base_rate, DEFAULTS.decision_rates.get(v.decision, 0.0))
    expected = unboosted * DEFAULTS.near_threshold_boost if boosted else unboosted
    assert audit_probability(v, POLICY, DEFAULTS).probability == pytest.approx(expected)


def test_probability_is_capped_at_one() -> None:
    settings = AuditSettings(base_rate=0.5, near_threshold_boost=5.0)
    draw = audit_probability(verdict({"counterfeit": 0.5}), POLICY, settings)
    assert draw.probability == 1.0
    sample = audit_sample(verdict({"counterfeit": 0.5}), POLICY, settings)
    assert sample is not None and sample.weight == 1.0


def test_sample_records_probability_and_weight() -> None:
    settings = AuditSettings(base_rate=1.0)
    v = verdict({"counterfeit": 0.1})
    sample = audit_sample(v, POLICY, settings)
    assert sample is not None
    assert (sample.verdict, sample.probability, sample.weight) == (v, 1.0, 1.0)
    # With a lower rate, every drawn sample carries 1 / probability.
    rate = 0.25
    samples = [
        audit_sample(
            verdict({"counterfeit": 0.1}, listing_id=f"L-{i}"), POLICY, AuditSettings(base_rate=rate)
        )
        for i in range(200)
    ]
    chosen = [s for s in samples if s is not None]
    assert chosen and all(s.probability == rate and s.weight == 1 / rate for s in chosen)


def test_nothing_is_sampled_when_disabled_at_zero_rate_or_for_shadow_verdicts() -> None:
    v = verdict({"counterfeit": 0.9})
    assert audit_sample(v, POLICY, AuditSettings(enabled=False, base_rate=1.0)) is None
    zero = AuditSettings(base_rate=0.0, decision_rates={}, near_threshold_boost=1.0)
    assert audit_sample(v, POLICY, zero) is None
    shadow = v.model_copy(update={"mode": "shadow"})
    assert audit_sample(shadow, POLICY, AuditSettings(base_rate=1.0)) is None


@pytest.mark.parametrize(
    "settings",
    [
        DEFAULTS,
        AuditSettings(category_rates={"spam": 0.3}, category_default_rate=0.02),
        AuditSettings(base_rate=0.0, decision_rates={}, category_default_rate=0.1, near_threshold_boost=1.0),
    ],
)
def test_sampled_exactly_when_the_draw_falls_below_the_probability(settings: AuditSettings) -> None:
    # audit_sample skips the full probability for draws no rate can reach: the same samples.
    scores = [{}, {"counterfeit": 0.1}, {"counterfeit": 0.49}, {"counterfeit": 0.65}, {"spam": 0.95}]
    outcomes = [None, decide_on_error("timeout")]
    seen = 0
    for i in range(400):
        for outcome in outcomes:
            v = verdict(scores[i % len(scores)], outcome=outcome, listing_id=f"L-{i}")
            draw = audit_probability(v, POLICY, settings)
            expected = draw.probability > 0.0 and drawn(v.idempotency_key, draw.probability)
            sample = audit_sample(v, POLICY, settings)
            assert (sample is not None) == expected, (v.scores, v.decision)
            seen += expected
            if sample is not None:
                assert (sample.probability, sample.stratum) == (draw.probability, draw.stratum)
    assert seen > 0


def test_a_redelivered_item_is_drawn_the_same_way() -> None:
    settings = AuditSettings(base_rate=0.5)
    first = [audit_sample(verdict({}, listing_id=f"L-{i}"), POLICY, settings) is not None for i in range(64)]
    # Redelivery: a new verdict (later time, other latencies) with the same idempotency key.
    later = datetime(2030, 1, 1, tzinfo=UTC)
    again = [
        audit_sample(verdict({}, listing_id=f"L-{i}", now=later), POLICY, settings) is not None
        for i in range(64)
    ]
    assert first == again
    assert 0 < sum(first) < 64  # the draw is not constant


def test_unit_hash_is_fixed_per_key_and_in_the_unit_interval() -> None:
    assert unit_hash("listing:L-1:0:p@1") == unit_hash("listing:L-1:0:p@1")
    # fixed across processes, restarts and machines (SHA-256, not Python's salted hash())
    assert unit_hash("listing:L-1:0:p@1") == 0.07979850398340115
    assert unit_hash("listing:L-1:0:p@2") == 0.7212488278231225
    assert unit_hash("listing:L-1:0:p@1") != unit_hash("listing:L-1:0:p@2")
    values = [unit_hash(f"k{i}") for i in range(1000)]
    assert all(0.0 <= x < 1.0 for x in values)
    assert drawn("any", 1.0) and not drawn("any", 0.0)


@pytest.mark.parametrize("probability", [0.01, 0.05, 0.25, 0.5, 0.9])
def test_share_drawn_matches_the_probability(probability: float) -> None:
    # A fixed set of keys and a deterministic draw: this cannot flake. Tolerance: 4 standard
    # errors of a binomial share, which a uniform hash meets with room to spare.
    n = 20_000
    keys = [f"listing:L-{i}:0:marketplace-listings@0123456789ab" for i in range(n)]
    share = sum(drawn(k, probability) for k in keys) / n
    assert abs(share - probability) <= 4 * math.sqrt(probability * (1 - probability) / n)


def test_score_band_edges() -> None:
    assert score_band({"a": 0.0}) == "0.0-0.1"
    assert score_band({"a": 0.1, "b": 0.79}) == "0.7-0.8"
    assert score_band({"a": 1.0}) == "0.9-1.0"


def test_settings_reject_rates_outside_the_unit_interval() -> None:
    with pytest.raises(ValidationError):
        AuditSettings(base_rate=1.5)
    with pytest.raises(ValidationError):
        AuditSettings(decision_rates={"review": -0.1})
    with pytest.raises(ValidationError):
        AuditSettings.model_validate({"decision_rates": {"escalate": 0.1}})
    with pytest.raises(ValidationError):
        AuditSettings(category_rates={"spam": 2.0})
    with pytest.raises(ValidationError):
        AuditSettings(near_threshold_boost=0.5)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_AUDIT__BASE_RATE", "0.2")
    monkeypatch.setenv("STREAMPROC_AUDIT__DECISION_RATES", '{"approve": 0.3}')
    monkeypatch.setenv("STREAMPROC_AUDIT__CATEGORY_RATES", '{"counterfeit": 0.5}')
    audit = Settings().audit
    assert (audit.base_rate, audit.decision_rates, audit.category_rates) == (
        0.2,
        {"approve": 0.3},
        {"counterfeit": 0.5},
    )


def test_a_packs_audit_block_sets_its_own_near_threshold_band_and_boost() -> None:
    focused = dataclasses.replace(POLICY, audit=AuditFocus(near_threshold_band=0.2, near_threshold_boost=10))
    v = verdict({"counterfeit": 0.35})  # 0.15 below review 0.5: outside the deployment's band 0.05
    assert audit_probability(v, POLICY, DEFAULTS).probability == pytest.approx(0.01)
    assert audit_probability(v, focused, DEFAULTS).probability == pytest.approx(0.1)
    # a field the pack leaves unset is the deployment's
    band_only = dataclasses.replace(POLICY, audit=AuditFocus(near_threshold_band=0.2))
    assert audit_probability(v, band_only, DEFAULTS).probability == pytest.approx(0.05)
    assert focused.version == POLICY.version  # which verdicts are audited, not what they decide


def test_a_pack_boost_above_the_deployments_is_drawn_at_its_own_rate() -> None:
    """The quick bound that skips most verdicts must allow for the pack's larger boost."""
    focused = dataclasses.replace(POLICY, audit=AuditFocus(near_threshold_band=0.5, near_threshold_boost=100))
    verdicts = [verdict({"counterfeit": 0.1}, listing_id=f"L-{n}") for n in range(2000)]
    samples = [s for v in verdicts if (s := audit_sample(v, focused, DEFAULTS)) is not None]
    assert {s.probability for s in samples} == {1.0}  # 0.01 boosted 100 times
    assert len(samples) == len(verdicts)


def test_a_bad_audit_block_in_a_pack_file_names_its_place(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(
        "name: p\ncontent_type: listing\npreamble: Moderate.\ncategories:\n"
        "  - {id: spam, label: A, title: Spam, description: Spam., reason_code: SPAM,\n"
        "     seller_message: Spam., thresholds: {reject: 0.8, review: 0.5}}\n"
        "audit: {near_threshold_band: 0.1, near_threshold_boost: 0.5}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"audit\.near_threshold_boost"):
        load_pack(pack)
    pack.write_text(pack.read_text().replace("boost: 0.5", "boost: 20"))
    assert load_pack(pack).audit == AuditFocus(near_threshold_band=0.1, near_threshold_boost=20)
