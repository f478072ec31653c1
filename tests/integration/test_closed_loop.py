"""The loop closed: a real worker moderates listings with the shipped embedding_probe pack,
reviewers' labels come back on the labels topic, the quality service joins them, and
`streamproc export-labels` → `streamproc train --shadow` turn them into candidate heads
whose figures `streamproc eval --compare` shows beside the live pack's."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streamproc.config import TopicSettings
from streamproc.dev.devstack import Broker
from streamproc.evaluation import EvalReport, load_dataset
from streamproc.policy import load_pack
from streamproc.schemas import LabelEvent, Verdict, encode
from tests.integration.conftest import (
    EMBEDDING_MODEL,
    ROOT,
    ModelServers,
    StartQuality,
    StartWorker,
    wait_until,
)
from tests.integration.kafka_io import consume, produce, publish_content

pytestmark = pytest.mark.integration

LISTINGS = ROOT / "policies" / "listings.yaml"
#: Labeled listings of the calibration split taken per category, and clean ones.
POSITIVES, CLEAN = 6, 24


def _items() -> list[tuple[dict[str, object], list[str]]]:
    """Listings of the labeled set's calibration split: enough positives per category to train on."""
    labeled = load_dataset(ROOT / "datasets" / "moderation-v1" / "calibration.jsonl")
    taken: Counter[str] = Counter()
    chosen = []
    for item in (i for i in labeled if i.content_type == "listing"):
        wanted = [c for c in item.true_categories if taken[c] < POSITIVES] or (
            [] if item.true_categories or taken["(clean)"] >= CLEAN else ["(clean)"]
        )
        if wanted:
            taken.update(item.true_categories or ["(clean)"])
            chosen.append(item)
    now = datetime.now(UTC).isoformat()
    return [({**i.event.model_dump(mode="json"), "created_at": now}, list(i.true_categories)) for i in chosen]


def _run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "streamproc", *map(str, args)]
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=900, env=environment, check=False
    )


async def test_labels_train_a_candidate_whose_figures_appear(
    broker: Broker,
    topics: TopicSettings,
    model_servers: ModelServers,
    start_worker: StartWorker,
    start_quality: StartQuality,
    tmp_path: Path,
) -> None:
    items = _items()
    truth = {str(event["listing_id"]): labels for event, labels in items}
    start_worker()
    quality = start_quality()
    await publish_content(broker.bootstrap, topics, listings=[event for event, _ in items])
    received = await consume(broker.bootstrap, [topics.verdicts], len(items), within=600)
    verdicts = [Verdict.model_validate_json(r.value) for r in received]
    assert sorted(v.content_id for v in verdicts) == sorted(truth)
    labels = [
        LabelEvent(
            label_id=f"review-{v.content_id}",
            content_type=v.content_type,
            content_id=v.content_id,
            revision=v.revision,
            true_categories=truth[v.content_id],
            labeler_id="reviewer-1",
            source="review",
            decision="reject" if truth[v.content_id] else "approve",  # a review outcome decides
            created_at=datetime.now(UTC),
        )
        for v in verdicts
    ]
    await produce(broker.bootstrap, topics.labels, [(lab.content_id.encode(), encode(lab)) for lab in labels])
    await wait_until(
        lambda: quality.total("streamproc_quality_labels") == len(items), "the labels to be joined"
    )

    exported = tmp_path / "labels.jsonl"
    env = {**(quality.process.env or {}), "STREAMPROC_KAFKA__CLIENT_ID": "export-labels"}  # its store
    done = _run("export-labels", "--out", exported, env=env)
    assert done.returncode == 0, done.stderr
    assert f"{len(items)} labeled items ({len(items)} review)" in done.stdout
    exported_truth = {i.event.content_id: sorted(i.true_categories) for i in load_dataset(exported)}
    assert exported_truth == {content_id: sorted(labels) for content_id, labels in truth.items()}

    servers = ["--embedding-url", model_servers.embedding.base_url, "--embedding-model-name", EMBEDDING_MODEL]
    candidate_dir = tmp_path / "candidate"
    trained = _run("train", "--policy", LISTINGS, "--data", exported, "--out", candidate_dir,
                   "--shadow", "listings-candidate", *servers)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    candidate = load_pack(candidate_dir / "listings-candidate.yaml")
    live = load_pack(LISTINGS)
    assert candidate.mode == "shadow" and candidate.probe is not None and live.probe is not None
    assert candidate.probe.flagged != live.probe.flagged  # new heads, from the store's labels
    digest = hashlib.sha256(exported.read_bytes()).hexdigest()
    assert candidate.probe.provenance["dataset_sha256"] == digest

    report_dir = tmp_path / "compare"
    compared = _run("eval", "--policy", LISTINGS, "--compare", candidate_dir / "listings-candidate.yaml",
                    "--data", exported, "--out", report_dir, *servers)  # fmt: skip
    assert compared.returncode == 0, compared.stderr
    report = EvalReport.model_validate_json((report_dir / "report.json").read_bytes())
    assert [p.version for p in report.packs] == [live.version, candidate.version]
    assert all(p.evaluated == len(items) for p in report.packs)
    assert report.comparison is not None
