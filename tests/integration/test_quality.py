"""The quality loop end to end: a real worker moderates items, labels come back, and
`streamproc quality` exports the accuracy scikit-learn computes on the same pairs, publishes
the final verdict of a review outcome, and keeps its figures across a restart."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from streamproc.config import TopicSettings
from streamproc.dev.devstack import Broker
from streamproc.schemas import AuditSample, DeadLetter, LabelEvent, Verdict, encode
from tests.factories import listing_dict, sample_events, video_dict
from tests.integration.conftest import ROOT, StartQuality, StartWorker, Worker, wait_until
from tests.integration.kafka_io import Received, consume, produce, publish_content
from tests.sklearn_reference import sklearn_per_category, sklearn_violation

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

#: What the QA labeler holds true per item; every other item violates nothing.
TRUTH = {
    "L-1006": ["counterfeit"],  # blocked terms: rejected by a rule without a category
    "L-1007": ["prohibited_items"],
    "L-1008": ["misleading_claims"],
    "L-1009": ["prohibited_items"],
    "L-1010": ["spam"],
    "V-2004": ["dangerous_acts"],
    "V-2005": ["misleading_claims"],
    "L-3001": ["spam"],  # off-platform contact: review, spam flagged
    "L-3002": ["counterfeit"],  # price anomaly: review, counterfeit flagged
    "L-3003": [],  # off-platform contact flagged spam, but the labeler disagrees
    "V-4001": ["dangerous_acts"],
}
SECOND_LABELER = {"L-1006": ["counterfeit", "prohibited_items"], "L-3001": ["spam"]}
REVIEWED = "L-3001"  # the review queue approves it: the rule leaned reject, so it is overturned


def events() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    now = datetime.now(UTC).isoformat()
    listings = [{**x, "created_at": now} for x in sample_events("listings.jsonl")] + [
        listing_dict(listing_id="L-3001", title="Barely used sofa", description="Message me on whatsapp"),
        listing_dict(
            listing_id="L-3002",
            title="Rolex Datejust",
            description="Genuine, with box.",
            category_path=["Fashion", "Watches"],
            price={"amount": "40.00", "currency": "USD"},
            attributes={"brand": "Rolex"},
        ),
        listing_dict(listing_id="L-3003", title="Desk lamp", description="Pay by wire transfer only"),
        listing_dict(listing_id="L-3004", title="Oak bookshelf", description="Solid oak, five shelves."),
        # more clean listings, so that the candidate pack's 25 % shadow sample surely draws some
        *(listing_dict(listing_id=f"L-50{n:02d}", title=f"Board game no. {n}") for n in range(6)),
    ]
    videos = [{**x, "created_at": now} for x in sample_events("videos.jsonl")] + [
        video_dict(video_id="V-4001", caption="Trying the choking challenge", transcript="Here we go."),
        video_dict(video_id="V-4002", caption="Sourdough starter day 3"),
    ]
    return listings, videos


def label(content: Verdict, label_id: str, truth: list[str], **fields: object) -> LabelEvent:
    return LabelEvent(
        label_id=label_id,
        content_type=content.content_type,
        content_id=content.content_id,
        revision=content.revision,
        true_categories=truth,
        labeler_id=str(fields.pop("labeler_id", "qa-1")),
        source=fields.pop("source", "qa_audit"),
        decision=fields.pop("decision", None),
        created_at=datetime.now(UTC),
    )


async def current(quality: Worker) -> None:
    """Wait until the gauges reflect every record read so far."""
    mark = time.time()
    await wait_until(
        lambda: quality.total("streamproc_quality_figures_updated_timestamp_seconds") > mark,
        "the quality service to refresh its figures",
    )


def store_figures(quality: Worker) -> Samples:
    """The store-derived gauges (not the process's own counters)."""
    return {
        key: value
        for key, value in quality.metrics().items()
        if key[0].startswith("streamproc_quality_")
        and not key[0].endswith(("_total", "_created", "_timestamp_seconds"))
    }


Expected = tuple[
    dict[tuple[str, str], dict[str, tuple[float, ...]]],
    dict[tuple[str, str], tuple[int, int]],
    dict[tuple[str, str], tuple[float, ...]],
]


def expected_accuracy(
    verdicts: list[Verdict], labels: list[LabelEvent], weights: dict[str, float]
) -> Expected:
    """scikit-learn's per-category (tn, fp, fn, tp, precision, recall, f1) per (version, mode),
    the (scored, excluded) pair counts, and the violation figures (any category against
    decision review or reject, same order) per (version, mode), from the records read back
    from the topics."""
    by_item: dict[tuple[str, str, int], list[Verdict]] = defaultdict(list)
    for verdict in verdicts:
        by_item[(verdict.content_type, verdict.content_id, verdict.revision)].append(verdict)
    grouped: dict[tuple[str, str], list[tuple[set[str], set[str], float, set[str], str]]] = defaultdict(list)
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for lab in labels:
        held = by_item[(lab.content_type, lab.content_id, lab.revision)]
        item_weight = next((weights[v.idempotency_key] for v in held if v.idempotency_key in weights), 1.0)
        for verdict in held:
            key = (verdict.policy_version, verdict.mode)
            if verdict.decided_by.kind == "error":
                counts[key][1] += 1
                continue
            counts[key][0] += 1
            weight = 1.0
            if lab.source == "qa_audit":
                weight = weights.get(verdict.idempotency_key, 1.0) if verdict.mode == "live" else item_weight
            truth, predicted = set(lab.true_categories), set(verdict.flagged_categories)
            grouped[key].append(
                (truth, predicted, weight, set(verdict.scores) | predicted | truth, verdict.decision)
            )
    result: dict[tuple[str, str], dict[str, tuple[float, ...]]] = {}
    for group, rows in grouped.items():
        categories = sorted(set().union(*(r[3] for r in rows)))
        result[group] = sklearn_per_category(
            [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], categories
        )
    violation = {
        group: sklearn_violation([r[0] for r in rows], [r[4] for r in rows], [r[2] for r in rows])
        for group, rows in grouped.items()
    }
    return result, {key: (scored, excluded) for key, (scored, excluded) in counts.items()}, violation


def exported_violation(figures: Samples) -> dict[tuple[str, str], tuple[float, ...]]:
    """The violation figures of expected_accuracy's shape, read from the service's metrics."""
    cells: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for (name, label_items), value in figures.items():
        labels = dict(label_items)
        if name == "streamproc_quality_violation_confusion":
            cells[(labels["policy_version"], labels["mode"])][labels["outcome"]] = value
        elif name.startswith("streamproc_quality_violation_"):
            figure = name.removeprefix("streamproc_quality_violation_").removesuffix("_ratio")
            cells[(labels["policy_version"], labels["mode"])][figure] = value
    order = ("tn", "fp", "fn", "tp", "precision", "recall", "f1")
    return {key: tuple(values[o] for o in order) for key, values in cells.items()}


def exported_accuracy(figures: Samples) -> dict[tuple[str, str], dict[str, tuple[float, ...]]]:
    """The same shape as expected_accuracy, read from the quality service's metrics."""
    cells: dict[tuple[str, str], dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    names = {
        "streamproc_quality_precision_ratio": "precision",
        "streamproc_quality_recall_ratio": "recall",
        "streamproc_quality_f1_ratio": "f1",
    }
    for (name, label_items), value in figures.items():
        labels = dict(label_items)
        if name == "streamproc_quality_confusion":
            cell = labels["outcome"]
        elif name in names:
            cell = names[name]
        else:
            continue
        cells[(labels["policy_version"], labels["mode"])][labels["category"]][cell] = value
    order = ("tn", "fp", "fn", "tp", "precision", "recall", "f1")
    return {
        key: {category: tuple(values[o] for o in order) for category, values in by_category.items()}
        for key, by_category in cells.items()
    }


def flat(table: dict[tuple[str, str], dict[str, tuple[float, ...]]]) -> dict[tuple[str, ...], float]:
    return {
        (*key, category, str(index)): value
        for key, by_category in table.items()
        for category, values in by_category.items()
        for index, value in enumerate(values)
    }


def records(received: list[Received], topic: str) -> list[bytes]:
    return [r.value for r in received if r.topic == topic]


@dataclass
class Moderated:
    """What the worker published for the test's items, read back from its topics."""

    live: list[Verdict]
    shadows: list[Verdict]
    samples: list[AuditSample]

    @property
    def by_id(self) -> dict[str, Verdict]:
        return {v.content_id: v for v in self.live}


async def moderate(broker: Broker, topics: TopicSettings, worker: Worker) -> Moderated:
    listings, videos = events()
    await publish_content(broker.bootstrap, topics, listings, videos)
    items = len(listings) + len(videos)
    # Every item verdicted and its outputs acknowledged; the worker's counters then say
    # how many shadow verdicts and audit samples to read.
    received = await consume(broker.bootstrap, [topics.verdicts], items)
    live = [Verdict.model_validate_json(v) for v in records(received, topics.verdicts)]
    assert len(live) == items, "the worker did not verdict every item"
    await wait_until(
        lambda: worker.total("streamproc_items_in_flight") == 0, "the worker to finish its items"
    )
    shadow_count = int(worker.total("streamproc_shadow_verdicts_total"))
    audit_count = int(worker.total("streamproc_audit_samples_total"))
    side = await consume(broker.bootstrap, [topics.shadow, topics.audit], shadow_count + audit_count)
    shadows = [Verdict.model_validate_json(v) for v in records(side, topics.shadow)]
    samples = [AuditSample.model_validate_json(v) for v in records(side, topics.audit)]
    assert (len(shadows), len(samples)) == (shadow_count, audit_count)
    assert shadows and samples, "the worker drew no shadow verdicts or audit samples: weights go untested"
    return Moderated(live, shadows, samples)


def check_side_figures(figures: Samples, moderated: Moderated) -> None:
    """Labeler agreement, shadow agreement and automation rate."""
    # labeler pairs: L-1006 (qa-1, qa-2) and L-3001 (qa-1, qa-2, rev-9): four, one exact
    assert figures[("streamproc_quality_labeler_pairs", ())] == 4
    assert figures[("streamproc_quality_labeler_exact_agreement_ratio", ())] == 0.25
    per_category = {
        dict(labels)["category"]: value
        for (name, labels), value in figures.items()
        if name == "streamproc_quality_labeler_agreement_ratio"
    }
    assert per_category == {"counterfeit": 1.0, "prohibited_items": 0.75, "spam": 0.5}
    by_id = moderated.by_id
    for version in {s.policy_version for s in moderated.shadows}:
        compared = [s for s in moderated.shadows if s.policy_version == version]
        agreed = sum(s.decision == by_id[s.content_id].decision for s in compared)
        key = (("policy_version", version),)
        assert figures[("streamproc_quality_shadow_compared", key)] == len(compared)
        assert figures[("streamproc_quality_shadow_agreement_ratio", key)] == pytest.approx(
            agreed / len(compared)
        )
    for version in {v.policy_version for v in moderated.live}:
        decided = [v for v in moderated.live if v.policy_version == version]
        automated = sum(v.decision != "review" for v in decided) / len(decided)
        ratio = figures[("streamproc_quality_automation_ratio", (("policy_version", version),))]
        assert ratio == pytest.approx(automated)


async def test_quality_loop(
    broker: Broker, topics: TopicSettings, start_worker: StartWorker, start_quality: StartQuality
) -> None:
    worker = start_worker(
        STREAMPROC_POLICY__PATHS=json.dumps([str(ROOT / "policies"), str(ROOT / "policies" / "candidates")]),
        STREAMPROC_AUDIT__BASE_RATE="0.4",
    )
    moderated = await moderate(broker, topics, worker)
    live, by_id, items = moderated.live, moderated.by_id, len(moderated.live)
    assert by_id[REVIEWED].decision == "review" and by_id[REVIEWED].flagged_categories == ["spam"]
    labels = [label(v, f"qa-{v.content_id}", TRUTH.get(v.content_id, [])) for v in live]
    labels += [label(by_id[c], f"qa2-{c}", truth, labeler_id="qa-2") for c, truth in SECOND_LABELER.items()]
    labels.append(
        label(by_id[REVIEWED], "review-1", [], source="review", decision="approve", labeler_id="rev-9")
    )
    bad = [b"{not json", encode(label(by_id["L-1001"], "review-2", [], source="review"))]  # no decision
    await produce(
        broker.bootstrap,
        topics.labels,
        [(lab.content_id.encode(), encode(lab)) for lab in labels] + [(b"L-1001", value) for value in bad],
    )

    quality = start_quality()
    # everything on its four topics, its own final verdict included
    total = items + 1 + len(moderated.shadows) + len(moderated.samples) + len(labels) + len(bad)
    weights = {s.verdict.idempotency_key: s.weight for s in moderated.samples}
    expected, pair_counts, violation = expected_accuracy([*live, *moderated.shadows], labels, weights)
    scored = sum(s for s, _ in pair_counts.values())

    def caught_up(q: Worker) -> bool:
        return (
            q.total("streamproc_quality_records_consumed_total") >= total
            and q.total("streamproc_quality_pairs") == scored
        )

    await wait_until(lambda: caught_up(quality), "the quality service to read every record")
    await current(quality)
    figures = store_figures(quality)

    exported = exported_accuracy(figures)
    assert {key: sorted(c) for key, c in exported.items()} == {key: sorted(c) for key, c in expected.items()}
    assert flat(exported) == pytest.approx(flat(expected))
    assert any(mode == "shadow" for _, mode in expected), "no shadow verdict was labelled"
    exported_binary = exported_violation(figures)
    assert exported_binary.keys() == violation.keys()
    for group, reference in violation.items():
        assert exported_binary[group] == pytest.approx(reference), group
    for (version, mode), (pairs, excluded) in pair_counts.items():
        key = (("mode", mode), ("policy_version", version))
        assert figures[("streamproc_quality_pairs", key)] == pairs
        assert (
            figures[("streamproc_quality_pairs_excluded", (*key, ("reason", "inference_error")))] == excluded
        )
    check_side_figures(figures, moderated)

    # The review outcome settled its item: one final verdict, by a human, overturning the lean.
    on_verdicts = [
        Verdict.model_validate_json(v)
        for v in records(await consume(broker.bootstrap, [topics.verdicts], items + 1), topics.verdicts)
    ]
    [final] = [v for v in on_verdicts if v.decided_by.kind == "human"]
    assert final.content_id == REVIEWED and final.decision == "approve" and final.decided_by.id == "rev-9"
    assert final.human is not None and final.human.overturned and final.human.original_decision == "review"
    assert final.idempotency_key == f"{by_id[REVIEWED].idempotency_key}:human:review-1"
    human = (("overturned", "true"), ("policy_version", final.policy_version), ("source", "review"))
    assert figures[("streamproc_quality_human_verdicts", human)] == 1

    dead = await consume(broker.bootstrap, [topics.dlq], 2)
    assert sorted(DeadLetter.model_validate_json(r.value).reason for r in dead) == [
        "invalid_json",
        "missing_decision",
    ]

    # Restart on the same store with a new group: every record is delivered again.
    quality.process.stop()
    again = start_quality()
    await wait_until(lambda: caught_up(again), "the restarted quality service to read every record again")
    await current(again)
    assert store_figures(again) == figures
    assert again.total("streamproc_quality_final_verdicts_published_total") == 0
    assert len(await consume(broker.bootstrap, [topics.verdicts], items + 1)) == items + 1
