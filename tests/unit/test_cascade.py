"""The cascade: items whose calibrated scores are uncertain go to a second model first."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from streamproc.cli import cli
from streamproc.config import InferenceSettings, load_settings
from streamproc.decision import Evaluation, SecondModel, decide_verdict, evaluate, evaluate_item
from streamproc.errors import ConfigError, InferenceError, InferenceTimeout
from streamproc.evaluation import plan_evaluation, run_evaluation
from streamproc.evaluation.report import EvalReport
from streamproc.inference import InferenceClient
from streamproc.inference.protocol import ModelAnswer, ModelRequest, TokenChoice
from streamproc.metrics import NOOP, DecisionRecorder, create
from streamproc.policy import Category, Policy, Thresholds, load_pack
from streamproc.policy.cascade import Cascade, CascadeBand, InvalidCascade
from streamproc.policy.model import CalibrationProvenance, InvalidPolicy, PlattCalibration
from streamproc.policy.rules import CompiledRules
from streamproc.schemas import SourceRef
from streamproc.worker.service import _second_model
from tests.factories import ROOT, listing, listing_dict

BAND = Cascade(CascadeBand(low=0.3, high=0.7))
SPAM = Category(
    id="spam",
    label="A",
    title="Spam",
    description="Repetitive or misleading promotion.",
    reason_code="SPAM",
    seller_message="Your listing looks like spam.",
    thresholds=Thresholds(reject=0.8, review=0.5),
)
PLAIN = Policy(
    name="cascade-test",
    content_type="listing",
    preamble="Moderate the listing.",
    categories=(SPAM,),
    scorer="label_logprob",
)
CASCADING = dataclasses.replace(PLAIN, cascade=BAND)
#: PLAIN's version before packs could have a cascade block: packs without one keep it.
PLAIN_VERSION = "cascade-test@92884cacafab"


class FakeModel:
    """Answers the label scorer's request with P(spam) = ``score``, or raises ``error``."""

    def __init__(self, score: float = 0.5, error: InferenceError | None = None) -> None:
        self.score, self.error = score, error
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        alternatives = (("A", math.log(self.score)), ("N", math.log(1 - self.score)))
        return ModelAnswer(
            text="A",
            tokens=(TokenChoice("A", alternatives[0][1], alternatives),),
            prompt_tokens=10,
            seconds=0.2,
        )


class Unreadable(FakeModel):
    async def complete(self, request: ModelRequest) -> ModelAnswer:
        self.requests.append(request)
        return ModelAnswer(text="?", tokens=(TokenChoice("?", -0.1, (("?", -0.1),)),))


async def _run(
    policy: Policy, first: FakeModel, second: FakeModel | None, metrics: DecisionRecorder = NOOP
) -> Evaluation:
    return await evaluate_item(policy, CompiledRules.compile(policy), listing(), first, metrics, second)


@pytest.mark.parametrize(("low", "high"), [(0.7, 0.3), (0.5, 0.5), (-0.1, 0.5), (0.2, 1.5)])
def test_a_band_needs_low_below_high_within_0_and_1(low: float, high: float) -> None:
    with pytest.raises(InvalidCascade, match=r"0 <= low < high <= 1"):
        CascadeBand(low=low, high=high)


def test_a_bad_band_in_a_pack_file_is_one_line_at_its_place(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(
        "name: p\ncontent_type: listing\npreamble: Moderate.\ncategories:\n"
        "  - {id: spam, label: A, title: Spam, description: Spam., reason_code: SPAM,\n"
        "     seller_message: Spam., thresholds: {reject: 0.8, review: 0.5}}\n"
        "cascade:\n  band: {low: 0.7, high: 0.3}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_pack(pack)
    message = str(caught.value)
    assert "\n" not in message
    assert "pack.yaml:8: cascade.band:" in message and "got low 0.7, high 0.3" in message
    pack.write_text(pack.read_text().replace("low: 0.7, high: 0.3", "low: 0.3, high: 0.7"))
    assert load_pack(pack).cascade == BAND


def test_packs_without_a_cascade_keep_their_version_and_a_band_changes_it() -> None:
    assert PLAIN.version == PLAIN_VERSION
    assert CASCADING.version != PLAIN.version
    wider = dataclasses.replace(PLAIN, cascade=Cascade(CascadeBand(low=0.2, high=0.8)))
    assert wider.version not in (PLAIN.version, CASCADING.version)


@pytest.mark.parametrize(("score", "uncertain"), [(0.29, False), (0.3, True), (0.69, True), (0.7, False)])
def test_the_band_includes_low_and_excludes_high(score: float, uncertain: bool) -> None:
    assert BAND.uncertain({"spam": 0.0, "adult": score}) is uncertain


async def test_an_uncertain_item_is_decided_by_the_second_model() -> None:
    first, second = FakeModel(0.5), FakeModel(0.9)
    result = await _run(CASCADING, first, second)
    assert result.cascaded and result.first is not None
    assert result.first[0].decision == "review" and result.first[1]["spam"] == pytest.approx(0.5)
    assert (result.outcome.decision, result.outcome.decided_by.id) == ("reject", "spam")
    assert result.scores["spam"] == pytest.approx(0.9)
    assert second.requests == first.requests  # the same requests
    assert (result.second_requests, len(result.answers)) == (1, 2)


async def test_the_verdict_names_the_model_that_decided() -> None:
    async def verdict_model(score: float) -> str:
        verdict, _ = await decide_verdict(
            CASCADING,
            CompiledRules.compile(CASCADING),
            listing(),
            FakeModel(score),
            model_name="first",
            source=SourceRef(topic="t", partition=0, offset=1),
            received=time.perf_counter(),
            clock=lambda: datetime.now(UTC),
            second=SecondModel(FakeModel(0.05), "second"),
        )
        assert verdict.usage is not None and verdict.latency.inference_seconds is not None
        seconds = verdict.latency.inference_seconds
        return f"{verdict.model}:{verdict.decision}:{verdict.usage.prompt_tokens}:{seconds:.1f}"

    # both models' tokens, and their answer times one after the other
    assert await verdict_model(0.5) == "second:approve:20:0.4"
    assert await verdict_model(0.95) == "first:reject:10:0.2"


class YesNoModel:
    """Answers yes_no requests with P(yes) = ``score``."""

    def __init__(self, score: float) -> None:
        self.score = score
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        self.requests.append(request)
        alternatives = (("Yes", math.log(self.score)), ("No", math.log(1 - self.score)))
        return ModelAnswer(text="Yes", tokens=(TokenChoice("Yes", alternatives[0][1], alternatives),))


def _second_scorer(b: float) -> Policy:
    calibration = (("spam", PlattCalibration(method="platt", a=1.0, b=b)),)
    return dataclasses.replace(PLAIN, cascade=Cascade(BAND.band, scorer="yes_no", calibration=calibration))


@pytest.mark.parametrize(("b", "decision"), [(0.0, "reject"), (-3.0, "approve")])
async def test_a_cascade_scorer_asks_the_second_model_its_own_way_and_its_calibration_applies(
    b: float, decision: str
) -> None:
    first, second = FakeModel(0.5), YesNoModel(0.9)
    result = await _run(_second_scorer(b), first, second)  # type: ignore[arg-type]
    assert result.cascaded and result.second_requests == 1
    assert "Answer Yes or No" in json.dumps(second.requests[0].body)
    assert second.requests != first.requests
    # P(yes) 0.9 through platt(a=1, b): 0.9 itself, or sigmoid(logit(0.9) - 3) = 0.31
    assert result.scores["spam"] == pytest.approx(1 / (1 + math.exp(-(math.log(9) + b))))
    assert result.outcome.decision == decision


def test_a_cascade_scorer_is_checked_with_the_pack() -> None:
    with pytest.raises(InvalidCascade, match=r"set cascade\.scorer"):
        Cascade(BAND.band, calibration=(("spam", PlattCalibration(method="platt", a=1.0, b=0.0)),))
    with pytest.raises(InvalidCascade, match="needs a prompt scorer"):
        Cascade(BAND.band, scorer="embedding_probe")
    unknown = Cascade(
        BAND.band, scorer="yes_no", calibration=(("scam", PlattCalibration("platt", 1.0, 0.0)),)
    )
    with pytest.raises(InvalidPolicy, match=r"names \['scam'\]"):
        dataclasses.replace(PLAIN, cascade=unknown)


def test_an_embedding_probe_packs_cascade_needs_its_own_scorer() -> None:
    probe = load_pack(ROOT / "policies" / "listings.yaml")
    with pytest.raises(InvalidPolicy, match="embedding_probe pack's cascade needs a prompt scorer"):
        dataclasses.replace(probe, cascade=BAND)
    assert dataclasses.replace(probe, cascade=Cascade(BAND.band, scorer="channel")).cascade is not None


def test_the_cascade_scorer_and_calibration_are_versioned_and_its_provenance_is_not() -> None:
    plain, calibrated = _second_scorer(0.0), _second_scorer(-3.0)
    assert len({CASCADING.version, plain.version, calibrated.version}) == 3
    assert calibrated.cascade is not None
    provenance = CalibrationProvenance(
        dataset="cal.jsonl", dataset_sha256="0" * 64, items=10, scored_items=10, model="m",
        scorer="yes_no", created_at=datetime(2026, 1, 1, tzinfo=UTC), method="platt",
        review_recall=0.8, reject_precision=0.9, categories=("spam",), tool="streamproc", command="c",
    )  # fmt: skip
    documented = dataclasses.replace(
        calibrated, cascade=dataclasses.replace(calibrated.cascade, calibration_provenance=provenance)
    )
    assert documented.version == calibrated.version


@pytest.mark.parametrize(
    ("policy", "score", "with_second"),
    [(CASCADING, 0.1, True), (CASCADING, 0.95, True), (PLAIN, 0.5, True), (CASCADING, 0.5, False)],
)
async def test_no_cascade_outside_the_band_without_a_band_or_without_a_second_model(
    policy: Policy, score: float, with_second: bool
) -> None:
    second = FakeModel(0.9)
    result = await _run(policy, FakeModel(score), second if with_second else None)
    assert not result.cascaded and not second.requests
    assert result.scores["spam"] == pytest.approx(score)


async def test_a_failing_second_model_sends_the_item_to_review_as_a_first_model_error() -> None:
    registry = CollectorRegistry()
    metrics = create(registry)
    result = await _run(CASCADING, FakeModel(0.5), FakeModel(error=InferenceTimeout("too slow")), metrics)
    assert result.cascaded and result.scores == {}
    assert (len(result.answers), result.second_requests, result.second_answers) == (1, 1, 0)
    assert (result.outcome.decision, result.outcome.decided_by.kind, result.outcome.decided_by.id) == (
        "review",
        "error",
        "timeout",
    )
    first_only = await evaluate(
        PLAIN, CompiledRules.compile(PLAIN), listing(), FakeModel(error=InferenceTimeout("x"))
    )
    assert first_only[0] == result.outcome
    # an unreadable answer from the second model: review, and counted as the first model's are
    result = await _run(CASCADING, FakeModel(0.5), Unreadable(), metrics)
    assert (result.outcome.decision, result.outcome.decided_by.id) == ("review", "protocol_error")
    assert registry.get_sample_value("streamproc_inference_errors_total", {"kind": "protocol_error"}) == 1


async def test_cascaded_items_and_second_model_requests_are_counted_per_pack() -> None:
    registry = CollectorRegistry()
    metrics = create(registry)
    metrics.policies_served({CASCADING.name: CASCADING.version}, [])
    labels = {"policy": CASCADING.name}
    assert registry.get_sample_value("streamproc_cascaded_items_total", labels) == 0
    for score in (0.5, 0.6, 0.1):
        await _run(CASCADING, FakeModel(score), FakeModel(0.9), metrics)
    assert registry.get_sample_value("streamproc_cascaded_items_total", labels) == 2
    assert registry.get_sample_value("streamproc_cascade_requests_total", labels) == 2


def test_the_second_model_setting_inherits_the_main_model_where_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings(inference=InferenceSettings(api_key="k", timeout_seconds=12.0))
    assert settings.cascade.inference(settings.inference) is None  # no model: no cascade
    monkeypatch.setenv("STREAMPROC_CASCADE__MODEL", "bigger")
    settings = load_settings(inference=InferenceSettings(api_key="k", timeout_seconds=12.0))
    same = settings.cascade.inference(settings.inference)
    assert same is not None
    assert (same.model, same.base_url, same.timeout_seconds) == ("bigger", settings.inference.base_url, 12.0)
    assert same.api_key is not None and same.api_key.get_secret_value() == "k"
    assert same.on_unavailable == "review"  # an unavailable second model never holds the stream
    monkeypatch.setenv("STREAMPROC_CASCADE__BASE_URL", "http://other:8000/v1")
    other = load_settings().cascade.inference(InferenceSettings(api_key="k"))
    assert other is not None and other.base_url == "http://other:8000/v1"
    assert other.api_key is None  # the main server's token is not sent to another server


def test_a_bad_second_model_setting_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_CASCADE__BASE_URL", "vllm:8000")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "\n" not in str(caught.value)
    assert "STREAMPROC_CASCADE__BASE_URL: 'vllm:8000' is not an http(s) URL" in str(caught.value)


PACK_FILE = (
    "name: p\ncontent_type: listing\npreamble: Moderate.\nscorer: label_logprob\ncategories:\n"
    "  - {id: spam, label: A, title: Spam, description: Spam., reason_code: SPAM,\n"
    "     seller_message: Spam., thresholds: {reject: 0.8, review: 0.5}}\n"
    "cascade:\n  band: {low: 0.3, high: 0.7}\n"
)
#: title: (true categories, first model's score, second model's score)
ITEMS: dict[str, tuple[list[str], float, float]] = {
    "item-a": (["spam"], 0.5, 0.9),  # review -> reject
    "item-b": ([], 0.4, 0.1),  # approve, in the band, approve again
    "item-c": ([], 0.6, 0.2),  # review (a false flag) -> approve
    "item-d": (["spam"], 0.95, 0.0),  # reject, outside the band
    "item-e": ([], 0.05, 0.0),  # approve, outside the band
}


class ByTitle(FakeModel):
    """Scores each item by its title, from ``ITEMS``."""

    def __init__(self, *, second: bool) -> None:
        super().__init__()
        self.second = second

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        text = json.dumps(request.body)
        _, first, second = next(v for title, v in ITEMS.items() if title in text)
        self.score = second if self.second else first
        return await super().complete(request)


def test_eval_reports_the_cascades_cost_and_effect_from_one_run(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(PACK_FILE, encoding="utf-8")
    data = tmp_path / "data.jsonl"
    lines = [
        {
            "content_type": "listing",
            "event": listing_dict(listing_id=f"L-{i}", title=title),
            "true_categories": truth,
        }
        for i, (title, (truth, _, _)) in enumerate(ITEMS.items())
    ]
    data.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    plan = plan_evaluation([pack], data, tmp_path / "out")
    second = ByTitle(second=True)
    [written] = run_evaluation(
        plan,
        InferenceSettings(model="first"),
        model=ByTitle(second=False),
        cascade=InferenceSettings(model="second", base_url="http://second:8000/v1"),
        second=second,
    )
    report = EvalReport.model_validate_json((written.directory / "report.json").read_text())
    cascade = report.packs[0].cascade
    assert cascade is not None and cascade.model.name == "second"
    assert (cascade.items, cascade.cascaded, cascade.second_model_requests) == (5, 3, 3)
    assert (cascade.extra_requests_per_item, cascade.decisions_changed, cascade.second_model_errors) == (
        0.6,
        2,
        0,
    )
    before, after = cascade.without_cascade, cascade.with_cascade
    assert before.violation.f1 == pytest.approx(0.8) and (before.automation_rate, before.review) == (0.6, 2)
    assert (after.violation.f1, after.automation_rate, after.review) == (1.0, 1.0, 0)
    # the report's own figures are the cascade's decisions; each cascaded item keeps the first model's
    assert report.packs[0].decisions.automation_rate == 1.0
    items = {i.id: i for i in report.packs[0].items}
    first_alone = items["listing:L-0:0"].without_cascade
    assert first_alone is not None and first_alone.decision == "review"
    assert (items["listing:L-0:0"].requests, items["listing:L-0:0"].second_model_requests) == (2, 1)
    assert items["listing:L-3:0"].without_cascade is None
    markdown = (written.directory / "report.md").read_text()
    assert "### Cascade" in markdown and "3 of 5 items cascaded, 3 extra requests (0.60 per item)" in markdown


def test_eval_with_a_second_model_needs_a_pack_with_a_cascade_block(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(PACK_FILE.split("cascade:", maxsplit=1)[0], encoding="utf-8")
    data = tmp_path / "data.jsonl"
    line = {"content_type": "listing", "event": listing_dict(), "true_categories": []}
    data.write_text(json.dumps(line) + "\n", encoding="utf-8")
    plan = plan_evaluation([pack], data, tmp_path / "out")
    with pytest.raises(ConfigError, match="--cascade-model needs a pack with a cascade block"):
        run_evaluation(plan, InferenceSettings(), model=FakeModel(), cascade=InferenceSettings(model="b"))


async def test_the_worker_builds_a_second_client_only_when_a_model_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = CollectorRegistry()
    metrics = create(registry)
    async with _second_model(load_settings(), metrics) as none:
        assert none is None
    monkeypatch.setenv("STREAMPROC_CASCADE__MODEL", "bigger")
    async with _second_model(load_settings(), metrics) as second:
        assert second is not None and second.name == "bigger"
        assert isinstance(second.client, InferenceClient) and second.client.available
    # the limit and circuit gauges stay the first model's: the second client registered none
    assert registry.get_sample_value("streamproc_model_concurrency_limit") == 0  # else its limit


def test_eval_checks_the_cascade_options_before_any_model_call(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(PACK_FILE, encoding="utf-8")
    data = tmp_path / "data.jsonl"
    line = {"content_type": "listing", "event": listing_dict(), "true_categories": []}
    data.write_text(json.dumps(line) + "\n", encoding="utf-8")
    args = ["eval", "--policy", str(pack), "--data", str(data), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, [*args, "--cascade-model", "b", "--cascade-url", "vllm:8000"])
    assert result.exit_code == 2
    assert "Invalid value for --cascade-url: 'vllm:8000' is not an http(s) URL" in result.output
    pack.write_text(PACK_FILE.split("cascade:", maxsplit=1)[0], encoding="utf-8")
    result = CliRunner().invoke(cli, [*args, "--cascade-model", "b"])
    assert result.exit_code == 1 and "--cascade-model needs a pack with a cascade block" in result.output
