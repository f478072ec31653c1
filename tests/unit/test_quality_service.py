"""The quality service's record handling and exported figures, with a real store and no broker."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from streamproc.cli import cli
from streamproc.config import CONFIG_FILE_ENV, Settings
from streamproc.dev.devstack import free_port
from streamproc.metrics import PrometheusQualityMetrics, create_quality
from streamproc.quality.figures import refresh_figures
from streamproc.quality.processor import QualityProcessor
from streamproc.quality.service import quality_group_id
from streamproc.quality.store import QualityStore, StoreError
from streamproc.schemas import AuditSample, DeadLetter, Verdict, encode
from tests.unit.conftest import quality_record as record
from tests.unit.test_quality_join import NOW, label, verdict

SETTINGS = Settings()
TOPICS = SETTINGS.topics


@pytest.fixture
def processor(store: QualityStore, quality_metrics: PrometheusQualityMetrics) -> QualityProcessor:
    return QualityProcessor(SETTINGS.topics, store, quality_metrics, worker_id="w", clock=lambda: NOW)


REVIEW_VERDICT = verdict(decision="review", flagged_categories=["spam"], reason_code="OFF_PLATFORM_CONTACT")
OUTCOME = label(label_id="rev-1", source="review", decision="approve", labeler_id="reviewer-1")


async def test_outcome_after_its_verdict_publishes_a_final_verdict(processor: QualityProcessor) -> None:
    assert await processor.process(record(TOPICS.verdicts, encode(REVIEW_VERDICT))) == []
    [out] = await processor.process(record(TOPICS.labels, encode(OUTCOME)))
    final = Verdict.model_validate_json(out.value)
    assert out.topic == TOPICS.verdicts and out.key == b"L-1"
    assert dict(out.headers)["idempotency-key"] == final.idempotency_key.encode()
    assert final.decided_by.kind == "human" and final.decided_by.id == "reviewer-1"
    assert final.human is not None and final.human.overturned  # the review leaned reject (spam flagged)
    assert final.idempotency_key == f"{REVIEW_VERDICT.idempotency_key}:human:rev-1"


async def test_outcome_before_its_verdict_is_kept_until_the_verdict_arrives(
    processor: QualityProcessor,
) -> None:
    assert await processor.process(record(TOPICS.labels, encode(OUTCOME))) == []
    [out] = await processor.process(record(TOPICS.verdicts, encode(REVIEW_VERDICT)))
    assert Verdict.model_validate_json(out.value).decision == "approve"


async def test_final_is_published_again_on_redelivery_until_read_back(
    processor: QualityProcessor, registry: CollectorRegistry
) -> None:
    await processor.process(record(TOPICS.verdicts, encode(REVIEW_VERDICT)))
    [first] = await processor.process(record(TOPICS.labels, encode(OUTCOME)))
    [again] = await processor.process(record(TOPICS.labels, encode(OUTCOME)))  # redelivered
    final = Verdict.model_validate_json(first.value)
    assert Verdict.model_validate_json(again.value).idempotency_key == final.idempotency_key
    # our own final verdict read back from the verdict topic: recognised, not an automated verdict
    assert await processor.process(record(TOPICS.verdicts, first.value)) == []
    assert await processor.process(record(TOPICS.labels, encode(OUTCOME))) == []
    assert await processor.process(record(TOPICS.verdicts, encode(REVIEW_VERDICT))) == []
    value = registry.get_sample_value
    assert value("streamproc_quality_final_verdicts_published_total", {"source": "review"}) == 2


async def test_qa_labels_publish_nothing(processor: QualityProcessor) -> None:
    await processor.process(record(TOPICS.verdicts, encode(REVIEW_VERDICT)))
    assert await processor.process(record(TOPICS.labels, encode(label(decision="reject")))) == []


@pytest.mark.parametrize(
    ("topic", "value", "reason"),
    [
        (TOPICS.labels, b"{not json", "invalid_json"),
        (TOPICS.labels, None, "invalid_json"),
        (TOPICS.labels, orjson.dumps({"label_id": "x", "source": "review"}), "schema_validation"),
        (TOPICS.labels, orjson.dumps({"schema_version": 2}), "unsupported_schema_version"),
        (TOPICS.labels, encode(label(source="review")), "missing_decision"),
        (TOPICS.labels, encode(label(source="appeal", decision="review")), "missing_decision"),
        (TOPICS.verdicts, b"[]", "invalid_json"),
        (TOPICS.verdicts, encode(verdict(mode="shadow")), "schema_validation"),
        (TOPICS.shadow, encode(verdict()), "schema_validation"),
        (TOPICS.audit, orjson.dumps({"weight": 2}), "schema_validation"),
    ],
)
async def test_bad_records_are_dead_lettered_with_a_reason(
    processor: QualityProcessor, registry: CollectorRegistry, topic: str, value: bytes | None, reason: str
) -> None:
    [out] = await processor.process(record(topic, value))
    letter = DeadLetter.model_validate_json(out.value)
    assert out.topic == TOPICS.dlq and letter.reason == reason and letter.source_topic == topic
    assert registry.get_sample_value("streamproc_quality_dead_letters_total", {"reason": reason}) == 1


async def test_store_errors_stop_the_item(processor: QualityProcessor, store: QualityStore) -> None:
    store.close()
    with pytest.raises(StoreError):
        await processor.process(record(TOPICS.verdicts, encode(REVIEW_VERDICT)))


async def test_figures_come_from_the_store_and_survive_reopening(
    processor: QualityProcessor, store: QualityStore, tmp_path: Path
) -> None:
    live = verdict(decision="reject", flagged_categories=["spam"], scores={"spam": 0.9, "adult": 0.1})
    shadow = verdict(mode="shadow", policy_version="candidate@1", decision="approve", scores={"spam": 0.2})
    other = verdict(content_id="L-2", idempotency_key="listing:L-2:0:listings@1", scores={"spam": 0.1})
    error = verdict(
        content_id="L-3",
        idempotency_key="listing:L-3:0:listings@1",
        decision="review",
        scores={},
        decided_by={"kind": "error", "id": "timeout"},
    )
    await processor.process(record(TOPICS.verdicts, encode(live)))
    await processor.process(record(TOPICS.shadow, encode(shadow)))
    await processor.process(record(TOPICS.verdicts, encode(other)))
    await processor.process(record(TOPICS.verdicts, encode(error)))
    sample = AuditSample(verdict=live, stratum="reject", probability=0.25, weight=4.0)
    await processor.process(record(TOPICS.audit, encode(sample)))
    await processor.process(record(TOPICS.labels, encode(label(label_id="a", true_categories=["spam"]))))
    await processor.process(
        record(
            TOPICS.labels, encode(label(label_id="b", labeler_id="bob", true_categories=["spam", "adult"]))
        )
    )
    await processor.process(record(TOPICS.labels, encode(label(label_id="c", content_id="L-2"))))
    await processor.process(record(TOPICS.labels, encode(label(label_id="d", content_id="L-3"))))

    registry = CollectorRegistry()
    refresh_figures(store, create_quality(registry))
    value = registry.get_sample_value
    live_spam = {"policy_version": "listings@1", "mode": "live", "category": "spam"}
    # labels a, b (both qa_audit, item sampled at weight 4) on L-1 (flagged spam); c on L-2 (nothing)
    assert value("streamproc_quality_confusion", {**live_spam, "outcome": "tp"}) == 8.0
    assert value("streamproc_quality_confusion", {**live_spam, "outcome": "tn"}) == 1.0
    assert value("streamproc_quality_precision_ratio", live_spam) == 1.0
    live_adult = {"policy_version": "listings@1", "mode": "live", "category": "adult"}
    assert value("streamproc_quality_confusion", {**live_adult, "outcome": "fn"}) == 4.0
    assert value("streamproc_quality_recall_ratio", live_adult) == 0.0
    assert value("streamproc_quality_pairs", {"policy_version": "listings@1", "mode": "live"}) == 3
    excluded = {"policy_version": "listings@1", "mode": "live", "reason": "inference_error"}
    assert value("streamproc_quality_pairs_excluded", excluded) == 1
    # the shadow's pairs weigh the revision's live sample
    shadow_spam = {"policy_version": "candidate@1", "mode": "shadow", "category": "spam"}
    assert value("streamproc_quality_confusion", {**shadow_spam, "outcome": "fn"}) == 8.0
    assert value("streamproc_quality_recall_ratio", shadow_spam) == 0.0
    assert value("streamproc_quality_shadow_agreement_ratio", {"policy_version": "candidate@1"}) == 0.0
    _check_violation(registry)
    assert value("streamproc_quality_shadow_compared", {"policy_version": "candidate@1"}) == 1
    assert value("streamproc_quality_automation_ratio", {"policy_version": "listings@1"}) == pytest.approx(
        2 / 3
    )
    assert value("streamproc_quality_labeler_pairs") == 1
    assert value("streamproc_quality_labeler_exact_agreement_ratio") == 0.0
    assert value("streamproc_quality_labeler_agreement_ratio", {"category": "spam"}) == 1.0
    assert value("streamproc_quality_labeler_agreement_ratio", {"category": "adult"}) == 0.0
    assert value("streamproc_quality_labels", {"source": "qa_audit"}) == 4
    assert value("streamproc_quality_store_items") == 3

    path = store.path
    store.close()
    with QualityStore(path, retention=timedelta(days=30), max_items=100) as reopened:
        again = CollectorRegistry()
        refresh_figures(reopened, create_quality(again))
        assert _samples(again) == _samples(registry)


def _check_violation(registry: CollectorRegistry) -> None:
    """Violating (any category) against flagged, from the same weighted pairs: L-1 rejected and
    violating twice at weight 4, L-2 approved and clean; the shadow approved L-1."""
    value = registry.get_sample_value
    live, shadow = (
        {"policy_version": "listings@1", "mode": "live"},
        {"policy_version": "candidate@1", "mode": "shadow"},
    )
    live_cells = [value("streamproc_quality_violation_confusion", {**live, "outcome": o}) for o in _CELLS]
    assert live_cells == [8.0, 0.0, 0.0, 1.0]
    assert [value(f"streamproc_quality_violation_{f}_ratio", live) for f in _RATIOS] == [1.0, 1.0, 1.0]
    shadow_cells = [value("streamproc_quality_violation_confusion", {**shadow, "outcome": o}) for o in _CELLS]
    assert shadow_cells == [0.0, 0.0, 8.0, 0.0]
    assert [value(f"streamproc_quality_violation_{f}_ratio", shadow) for f in _RATIOS] == [0.0, 0.0, 0.0]


_CELLS = ("tp", "fp", "fn", "tn")
_RATIOS = ("precision", "recall", "f1")


async def test_pruned_series_disappear(processor: QualityProcessor, store: QualityStore) -> None:
    old = NOW - timedelta(days=40)
    await processor.process(record(TOPICS.verdicts, encode(verdict(produced_at=old))))
    await processor.process(record(TOPICS.labels, encode(label(created_at=old))))
    registry = CollectorRegistry()
    metrics = create_quality(registry)
    refresh_figures(store, metrics)
    labels = {"policy_version": "listings@1", "mode": "live"}
    assert registry.get_sample_value("streamproc_quality_pairs", labels) == 1
    store.prune(NOW)
    refresh_figures(store, metrics)
    assert registry.get_sample_value("streamproc_quality_pairs", labels) is None
    assert registry.get_sample_value("streamproc_quality_violation_f1_ratio", labels) is None
    assert registry.get_sample_value("streamproc_quality_store_items") == 0


def test_group_id_defaults_to_the_workers_with_a_suffix() -> None:
    assert quality_group_id(Settings(kafka={"group_id": "mod"})) == "mod-quality"
    assert quality_group_id(Settings(kafka={"group_id": "mod"}, quality={"group_id": "qa"})) == "qa"


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_quality_command_without_a_broker_names_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    monkeypatch.delenv(CONFIG_FILE_ENV, raising=False)
    monkeypatch.setenv("STREAMPROC_KAFKA__BOOTSTRAP_SERVERS", bootstrap)
    result = CliRunner().invoke(cli, ["quality"])
    assert result.exit_code == 1
    assert f"cannot reach Kafka at {bootstrap}" in result.output
