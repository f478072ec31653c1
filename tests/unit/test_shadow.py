"""Shadow packs: which items they apply to, how they are validated, and that the processor
runs them beside the live pack without letting them touch live outputs."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from streamproc.cli import cli
from streamproc.config import Settings
from streamproc.decision.sampling import drawn, shadow_key
from streamproc.errors import ConfigError, InferenceTimeout
from streamproc.inference.protocol import ModelAnswer, ModelRequest
from streamproc.metrics import PrometheusWorkerMetrics
from streamproc.policy import Policy, PolicySet, Thresholds, load_pack
from streamproc.schemas import AuditSample, DeadLetter, Verdict
from streamproc.stream import InboundRecord, OutboundRecord
from streamproc.worker import Processor, worker_topics
from streamproc.worker.policy_watch import watch_policies
from tests.factories import (
    POLICIES,
    copy_shipped_packs,
    label_policies,
    listing,
    listing_dict,
    shipped_policies,
    video,
    video_dict,
    worker_processor,
)
from tests.unit.test_processor import FakeModel as ProcessorFakeModel

ROOT = Path(__file__).resolve().parents[2]
CANDIDATES = ROOT / "policies" / "candidates"
SETTINGS = Settings(kafka={"client_id": "worker-1"}, audit={"enabled": False})
TOPICS = SETTINGS.topics
MARK = "CANDIDATE POLICY"


def live_packs() -> tuple[Policy, ...]:
    return tuple(
        p.with_thresholds({c: Thresholds(reject=0.8, review=0.5) for c in p.category_ids})
        for p in label_policies().policies
    )


def candidate(
    name: str = "listings-candidate",
    *,
    sample: float = 1.0,
    verticals: tuple[str, ...] = (),
    content_type: str = "listing",
) -> Policy:
    """A stricter shadow version of the live default pack, recognisable in its prompt."""
    base = next(p for p in live_packs() if p.content_type == content_type and not p.verticals)
    strict = base.with_thresholds({c: Thresholds(reject=0.5, review=0.3) for c in base.category_ids})
    return dataclasses.replace(
        strict,
        name=name,
        mode="shadow",
        shadow_sample=sample,
        verticals=verticals,
        preamble=f"{MARK}\n{base.preamble}",
    )


class FakeModel(ProcessorFakeModel):
    """The processor tests' fake model that optionally fails the candidate's (or the live
    pack's) requests and records how many requests were in flight at once."""

    def __init__(
        self,
        probabilities: dict[str, float],
        *,
        candidate_error: Exception | None = None,
        live_error: Exception | None = None,
    ) -> None:
        super().__init__(probabilities)
        self.candidate_error = candidate_error
        self.live_error = live_error
        self.in_flight = 0
        self.most_in_flight = 0

    async def complete(self, request: ModelRequest) -> ModelAnswer:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            for _ in range(3):  # let other tasks run, as a real request would
                await asyncio.sleep(0)
            is_candidate = MARK in str(request.body)
            if is_candidate and self.candidate_error is not None:
                self.calls.append(request)
                raise self.candidate_error
            if not is_candidate and self.live_error is not None:
                self.calls.append(request)
                raise self.live_error
        finally:
            self.in_flight -= 1
        return await super().complete(request)


def processor(
    model: FakeModel, metrics: PrometheusWorkerMetrics, *shadows: Policy, settings: Settings = SETTINGS
) -> Processor:
    return worker_processor(settings, PolicySet([*live_packs(), *shadows]), model, metrics)


def record(value: bytes, topic: str = TOPICS.listings, offset: int = 7) -> InboundRecord:
    return InboundRecord(topic=topic, partition=0, offset=offset, key=b"L-1", value=value)


# -- selection and validation -------------------------------------------------------------


def test_live_selection_is_unchanged_and_shadows_follow_the_same_selection() -> None:
    health_live = dataclasses.replace(live_packs()[0], name="health-live", verticals=("Health",))
    default_shadow = candidate("default-candidate")
    health_shadow = candidate("health-candidate", verticals=("health",))
    video_shadow = candidate("video-candidate", content_type="video")
    policies = PolicySet([*live_packs(), health_live, default_shadow, health_shadow, video_shadow])

    home, health = listing(category_path=["Home"]), listing(category_path=["Health", "Vitamins"])
    assert policies.select(home).name == "marketplace-listings"
    assert policies.select(health).name == "health-live"
    assert [p.name for p in policies.policies] == ["marketplace-listings", "short-videos", "health-live"]
    assert [p.name for p in policies.shadows(home)] == ["default-candidate"]
    # The default candidate shadows the live default only; a vertical candidate its vertical.
    assert [p.name for p in policies.shadows(health)] == ["health-candidate"]
    assert [p.name for p in policies.shadows(video())] == ["video-candidate"]
    assert policies.shadow_versions == {
        p.name: p.version for p in (default_shadow, health_shadow, video_shadow)
    }
    assert "default-candidate" not in policies.versions


def test_a_vertical_candidate_without_a_live_vertical_pack_shadows_the_default() -> None:
    policies = PolicySet(
        [*live_packs(), candidate("default-candidate"), candidate("h", verticals=("Health",))]
    )
    assert [p.name for p in policies.shadows(listing(category_path=["Health"]))] == ["default-candidate", "h"]


def test_a_shadow_pack_cannot_be_the_only_pack_of_its_content_type() -> None:
    videos_only = [p for p in live_packs() if p.content_type == "video"]
    with pytest.raises(
        ConfigError, match=r"shadow packs \['listings-candidate'\] are the only listing packs"
    ):
        PolicySet([*videos_only, candidate()])
    # Nor does a shadow default count as the live default.
    health_live = dataclasses.replace(live_packs()[0], name="health-live", verticals=("Health",))
    with pytest.raises(ConfigError, match="exactly one listing pack without verticals"):
        PolicySet([*videos_only, health_live, candidate()])


def test_names_are_unique_across_live_and_shadow_packs() -> None:
    with pytest.raises(ConfigError, match="unique"):
        PolicySet([*live_packs(), candidate("marketplace-listings")])


def test_mode_and_sample_are_not_part_of_the_version() -> None:
    shadow = candidate(sample=0.1)
    assert shadow.version == dataclasses.replace(shadow, mode="live", shadow_sample=1.0).version
    assert shadow.version != dataclasses.replace(shadow, review_sla_hours=2).version


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (
            "content_type: listing",
            "mode: shadow\nshadow_sample: 1.5\ncontent_type: listing",
            "shadow_sample: Input should be less than or equal to 1",
        ),
        (
            "content_type: listing",
            "shadow_sample: 0.5\ncontent_type: listing",
            "shadow_sample applies to mode: shadow packs only",
        ),
        (
            "content_type: listing",
            "mode: canary\ncontent_type: listing",
            "mode: Input should be 'live' or 'shadow'",
        ),
        ("review_sla_hours: 24", "review_sla_hours: 0", "review_sla_hours: Input should be greater than 0"),
        (
            "review_sla_hours: 4 ",
            "review_sla_hours: -1 ",
            r"categories.1.review_sla_hours: Input should be greater",
        ),
    ],
)
def test_pack_files_validate_mode_sample_and_sla(tmp_path: Path, old: str, new: str, problem: str) -> None:
    text = (POLICIES / "listings.yaml").read_text()
    assert old in text
    path = tmp_path / "candidate.yaml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=problem):
        load_pack(path)


def test_the_shipped_candidate_is_a_shadow_and_not_loaded_by_default() -> None:
    pack = load_pack(CANDIDATES / "listings-v2.yaml")
    assert (pack.mode, pack.content_type, pack.verticals) == ("shadow", "listing", ())
    assert 0 < pack.shadow_sample <= 1
    assert not shipped_policies().shadow_policies  # `policies` does not descend into candidates/
    both = PolicySet([*shipped_policies().policies, pack])
    assert both.shadows(listing()) == (pack,)


def test_policy_check_and_check_config_show_shadow_packs(monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(cli, ["policy", "check", str(POLICIES), str(CANDIDATES)])
    assert result.exit_code == 0, result.output
    assert (
        "marketplace-listings-v2@" in result.output
        and "(shadow on 25% of its items, listing" in result.output
    )
    alone = CliRunner().invoke(cli, ["policy", "check", str(CANDIDATES)])
    assert alone.exit_code == 1 and "also load the live packs" in alone.output

    monkeypatch.setenv("STREAMPROC_POLICY__PATHS", orjson.dumps([str(POLICIES), str(CANDIDATES)]).decode())
    shown = CliRunner().invoke(cli, ["check-config"])
    assert shown.exit_code == 0, shown.output
    config = orjson.loads(shown.output)
    assert set(config["policy_versions"]) == {"marketplace-listings", "short-videos"}
    assert config["shadow_policy_versions"]["marketplace-listings-v2"]["shadow_sample"] == 0.25


def test_worker_checks_the_audit_and_shadow_topics_only_when_it_uses_them() -> None:
    base = [TOPICS.listings, TOPICS.videos, TOPICS.verdicts, TOPICS.review, TOPICS.dlq]
    live_only = PolicySet(live_packs())
    with_shadow = PolicySet([*live_packs(), candidate()])
    assert worker_topics(SETTINGS, live_only) == base
    assert worker_topics(SETTINGS, with_shadow) == [*base, TOPICS.shadow]
    audited = Settings(audit={"enabled": True})
    assert worker_topics(audited, with_shadow) == [*base, TOPICS.audit, TOPICS.shadow]


# -- the processor ------------------------------------------------------------------------


def outputs_by_topic(outputs: list[OutboundRecord]) -> dict[str, list[bytes]]:
    by_topic: dict[str, list[bytes]] = {}
    for output in outputs:
        by_topic.setdefault(output.topic, []).append(output.value)
    return by_topic


async def test_shadow_verdict_goes_only_to_the_shadow_topic(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    shadow = candidate()
    model = FakeModel({"N": 0.4, "A": 0.6})  # counterfeit 0.6: live review, candidate reject
    outputs = await processor(model, metrics, shadow).process(record(orjson.dumps(listing_dict())))

    by_topic = outputs_by_topic(outputs)
    assert sorted(by_topic) == sorted([TOPICS.verdicts, TOPICS.review, TOPICS.shadow])
    live = Verdict.model_validate_json(by_topic[TOPICS.verdicts][0])
    assert by_topic[TOPICS.review] == by_topic[TOPICS.verdicts]
    assert (live.mode, live.decision, live.policy_version) == ("live", "review", live_packs()[0].version)
    [shadow_value] = by_topic[TOPICS.shadow]
    candidate_verdict = Verdict.model_validate_json(shadow_value)
    assert (candidate_verdict.mode, candidate_verdict.decision) == ("shadow", "reject")
    assert candidate_verdict.policy_version == shadow.version
    assert candidate_verdict.idempotency_key == f"listing:L-1:0:{shadow.version}" != live.idempotency_key
    assert candidate_verdict.review is None  # a rejection; and never on the review topic anyway
    [shadow_output] = [o for o in outputs if o.topic == TOPICS.shadow]
    assert dict(shadow_output.headers)["idempotency-key"] == candidate_verdict.idempotency_key.encode()
    assert len(model.calls) == 2 and model.most_in_flight == 2  # run concurrently, same client

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("streamproc_shadow_verdicts_total", policy=shadow.name, decision="reject") == 1
    assert sample("streamproc_shadow_agreement_total", policy=shadow.name, agreed="false") == 1
    assert (
        sample("streamproc_verdicts_total", content_type="listing", decision="review", category="counterfeit")
        == 1
    )
    assert sample(
        "streamproc_verdicts_total", content_type="listing", decision="reject", category="counterfeit"
    ) in (
        None,
        0,
    )


async def test_agreement_is_counted_when_decisions_match(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    shadow = candidate()
    await processor(FakeModel({"N": 0.9, "A": 0.1}), metrics, shadow).process(
        record(orjson.dumps(listing_dict()))
    )
    labels = {"policy": shadow.name, "agreed": "true"}
    assert registry.get_sample_value("streamproc_shadow_agreement_total", labels) == 1


async def test_a_failing_shadow_never_touches_the_live_verdict(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    shadow = candidate()
    model = FakeModel({"N": 0.9, "A": 0.1}, candidate_error=RuntimeError("candidate bug"))
    outputs = await processor(model, metrics, shadow).process(record(orjson.dumps(listing_dict())))
    assert [o.topic for o in outputs] == [TOPICS.verdicts]
    assert Verdict.model_validate_json(outputs[0].value).decision == "approve"
    assert registry.get_sample_value("streamproc_shadow_failures_total", {"policy": shadow.name}) == 1
    assert registry.get_sample_value("streamproc_dead_letters_total", {"reason": "internal_error"}) == 0


async def test_a_shadow_inference_error_is_a_shadow_review_like_live_would_be(
    metrics: PrometheusWorkerMetrics,
) -> None:
    model = FakeModel({"N": 0.9, "A": 0.1}, candidate_error=InferenceTimeout("slow"))
    outputs = await processor(model, metrics, candidate()).process(record(orjson.dumps(listing_dict())))
    by_topic = outputs_by_topic(outputs)
    assert TOPICS.review not in by_topic  # the live verdict approved; the candidate's review stays in shadow
    shadow = Verdict.model_validate_json(by_topic[TOPICS.shadow][0])
    assert (shadow.decision, shadow.reason_code, shadow.mode) == ("review", "INFERENCE_ERROR", "shadow")


async def test_a_live_failure_is_dead_lettered_without_shadow_output(
    metrics: PrometheusWorkerMetrics,
) -> None:
    model = FakeModel({"N": 0.9}, live_error=RuntimeError("bug"))
    outputs = await processor(model, metrics, candidate()).process(record(orjson.dumps(listing_dict())))
    assert [o.topic for o in outputs] == [TOPICS.dlq]
    assert DeadLetter.model_validate_json(outputs[0].value).reason == "internal_error"


async def test_shadows_apply_to_their_content_type_only(metrics: PrometheusWorkerMetrics) -> None:
    model = FakeModel({"N": 0.9})
    outputs = await processor(model, metrics, candidate()).process(
        record(orjson.dumps(video_dict()), topic=TOPICS.videos)
    )
    assert [o.topic for o in outputs] == [TOPICS.verdicts] and len(model.calls) == 1


async def test_the_shadow_sample_is_a_stable_draw_per_item_revision(metrics: PrometheusWorkerMetrics) -> None:
    shadow = candidate(sample=0.5)
    proc = processor(FakeModel({"N": 0.9}), metrics, shadow)
    shadowed: list[str] = []
    for i in range(40):
        outputs = await proc.process(record(orjson.dumps(listing_dict(listing_id=f"L-{i}")), offset=i))
        if any(o.topic == TOPICS.shadow for o in outputs):
            shadowed.append(f"L-{i}")
    expected = [f"L-{i}" for i in range(40) if drawn(shadow_key(f"L-{i}", 0, shadow.version), 0.5)]
    assert shadowed == expected and 0 < len(expected) < 40
    # Redelivered: the same items again, the same draw.
    again = [
        f"L-{i}"
        for i in range(40)
        if any(
            o.topic == TOPICS.shadow
            for o in await proc.process(record(orjson.dumps(listing_dict(listing_id=f"L-{i}")), offset=99))
        )
    ]
    assert again == shadowed


async def test_a_zero_sample_shadow_sends_nothing(metrics: PrometheusWorkerMetrics) -> None:
    model = FakeModel({"N": 0.9})
    outputs = await processor(model, metrics, candidate(sample=0.0)).process(
        record(orjson.dumps(listing_dict()))
    )
    assert [o.topic for o in outputs] == [TOPICS.verdicts] and len(model.calls) == 1


async def test_live_verdicts_are_audited_and_shadow_verdicts_never(
    metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    settings = Settings(kafka={"client_id": "worker-1"}, audit={"base_rate": 1.0})
    model = FakeModel({"N": 0.4, "A": 0.6})
    outputs = await processor(model, metrics, candidate(), settings=settings).process(
        record(orjson.dumps(listing_dict()))
    )
    by_topic = outputs_by_topic(outputs)
    [audit_value] = by_topic[TOPICS.audit]
    audit = AuditSample.model_validate_json(audit_value)
    assert (
        audit.verdict.mode == "live"
        and audit.verdict.idempotency_key
        == Verdict.model_validate_json(by_topic[TOPICS.verdicts][0]).idempotency_key
    )
    assert (audit.probability, audit.weight, audit.stratum) == (1.0, 1.0, "review/counterfeit/0.6-0.7")
    assert registry.get_sample_value("streamproc_audit_samples_total", {"decision": "review"}) == 1


async def test_reload_adding_shadow_packs_is_rejected_when_the_worker_started_without(
    tmp_path: Path, metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    copy_shipped_packs(tmp_path)
    applied: list[PolicySet] = []
    watcher = asyncio.create_task(
        watch_policies([tmp_path], applied.append, metrics, debounce_ms=50, allow_shadows=False)
    )
    rejected = {"result": "rejected"}
    try:
        # Written again every half second until seen: the watcher may not be watching yet at
        # the first write. The bound only guards against a watcher that never reports.
        for attempt in range(120):
            if registry.get_sample_value("streamproc_policy_reloads_total", rejected):
                break
            if attempt % 10 == 0:
                shutil.copy(CANDIDATES / "listings-v2.yaml", tmp_path / "listings-v2.yaml")
            await asyncio.sleep(0.05)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    assert registry.get_sample_value("streamproc_policy_reloads_total", rejected) == 1
    assert applied == []


def test_the_shadow_draw_depends_on_revision_and_candidate_version() -> None:
    assert shadow_key("L-1", 2, "p@v") == "L-1:2:p@v"
    ids = [f"L-{i}" for i in range(40)]

    def drawn_ids(revision: int, version: str) -> list[str]:
        return [i for i in ids if drawn(shadow_key(i, revision, version), 0.5)]

    assert drawn_ids(0, "p@1") != drawn_ids(1, "p@1")  # another revision: another draw
    assert drawn_ids(0, "p@1") != drawn_ids(0, "p@2")  # another candidate version: another draw
