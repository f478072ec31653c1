"""`streamproc topics apply` on the real broker, and the inference client on the real server."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import uuid
from pathlib import Path
from typing import cast

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from streamproc.cli import cli
from streamproc.config import InferenceSettings
from streamproc.dev.devstack import Broker, VllmServer
from streamproc.errors import InferenceProtocolError
from streamproc.inference import InferenceClient
from streamproc.metrics import create
from streamproc.policy import ScorerName, item_content
from streamproc.policy.scorers import SCORERS, LabelLogprobScorer
from streamproc.topics import apply_topics, load_topic_specs
from tests.factories import default_policy, listing
from tests.integration.conftest import EMBEDDING_MODEL, SERVED_MODEL

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def apply(bootstrap: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "streamproc",
            "topics",
            "apply",
            "--bootstrap",
            bootstrap,
            "--replication-factor",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_topics_apply_creates_then_reports_no_drift(broker: Broker) -> None:
    first, second = apply(broker.bootstrap), apply(broker.bootstrap)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    names = sorted(p.stem for p in (ROOT / "topics").glob("*.yaml"))
    assert sorted(line.split()[1] for line in second.stdout.splitlines() if line.startswith("ok")) == names
    assert "created" not in second.stdout


async def test_topics_apply_reports_drift_and_changes_nothing(broker: Broker) -> None:
    spec = load_topic_specs(ROOT / "topics")[0]
    spec = spec.model_copy(update={"name": f"drift.{uuid.uuid4().hex[:8]}"})
    created = await apply_topics(broker.bootstrap, [spec], replication_factor=1)
    assert created.created == [spec.name]
    wider = spec.model_copy(update={"partitions": spec.partitions + 3})
    report = await apply_topics(broker.bootstrap, [wider], replication_factor=1)
    assert report.created == [] and report.unchanged == []
    assert report.drift == [f"{spec.name}: partitions {spec.partitions} (spec {wider.partitions})"]
    again = await apply_topics(broker.bootstrap, [spec], replication_factor=1)
    assert again.unchanged == [spec.name]  # the topic itself was left alone


async def test_label_request_against_the_real_server(vllm: VllmServer) -> None:
    policy = default_policy("listing")
    scorer = LabelLogprobScorer()
    settings = InferenceSettings(base_url=vllm.base_url, model=SERVED_MODEL)
    registry = CollectorRegistry()
    async with InferenceClient(settings, create(registry)) as client:
        [first_request] = scorer.requests(
            policy, item_content(policy, listing(title="Rolex replica, 1:1 copy"))
        )
        [second_request] = scorer.requests(policy, item_content(policy, listing(title="Oak dining table")))
        first = await client.complete(first_request)
        second = await client.complete(second_request)
    # the policy text is a shared prefix: the second request reuses the first one's cache
    assert second.cached_prompt_tokens is not None and second.cached_prompt_tokens > 100
    for answer in (first, second):
        [token] = answer.tokens
        assert 1 <= len(token.top_logprobs) <= 20
        assert all(logprob <= 0.0 for _, logprob in token.top_logprobs)
        assert answer.prompt_tokens > 100 and answer.completion_tokens == 1
    scores = scorer.scores(policy, [first])
    assert set(scores) == set(policy.category_ids)
    assert all(0.0 <= s <= 1.0 for s in scores.values()) and sum(scores.values()) <= 1.0 + 1e-9
    assert registry.get_sample_value("streamproc_model_request_latency_seconds_count") == 2


def test_worker_refuses_to_start_without_its_topics(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_KAFKA__BOOTSTRAP_SERVERS", broker.bootstrap)
    monkeypatch.setenv("STREAMPROC_TOPICS__VERDICTS", f"missing.{uuid.uuid4().hex[:8]}")
    result = CliRunner().invoke(cli, ["worker"])
    assert result.exit_code == 1
    assert "do not exist" in result.output and "streamproc topics apply" in result.output


@pytest.mark.parametrize("name", sorted(set(SCORERS) - {"embedding_probe"}))
async def test_every_scorer_against_the_real_server(vllm: VllmServer, name: str) -> None:
    scorer = SCORERS[name]
    policy = dataclasses.replace(
        default_policy("listing"), scorer=cast(ScorerName, name), heads=None, probe=None
    )
    requests = scorer.requests(policy, item_content(policy, listing(title="Rolex replica, 1:1 copy")))
    settings = InferenceSettings(base_url=vllm.base_url, model=SERVED_MODEL, timeout_seconds=120)
    async with InferenceClient(settings, create(CollectorRegistry())) as client:
        answers = [await client.complete(request) for request in requests]  # the server accepts each
    assert all(a.prompt_tokens > 50 and a.completion_tokens >= 1 for a in answers)
    first_word = answers[0].text.strip().split("\n")[0].strip().lower()
    if name == "llama_guard" and first_word not in {"safe", "unsafe"}:
        # not a guard model: its answer is outside the format, which must be an error
        with pytest.raises(InferenceProtocolError):
            scorer.scores(policy, answers)
        return
    scores = scorer.scores(policy, answers)
    assert list(scores) == list(policy.category_ids)
    assert all(0.0 <= s <= 1.0 for s in scores.values())


async def test_the_shipped_heads_read_the_real_embedding_server(embedding_server: VllmServer) -> None:
    """The backbone the tests serve returns vectors of the width the shipped heads were
    trained on, and they score a clear violation above a clean item."""
    settings = InferenceSettings(
        base_url=embedding_server.base_url, model=EMBEDDING_MODEL, timeout_seconds=120
    )
    scorer = SCORERS["embedding_probe"]
    policy = default_policy("listing")
    items = {
        "replica": listing(title="Rolex Submariner replica, 1:1 copy", description="Mirror quality, cheap."),
        "clean": listing(title="Oak bookshelf", description="Solid oak, five shelves, pick-up only."),
    }
    async with InferenceClient(settings, create(CollectorRegistry())) as client:
        scores = {}
        for name, event in items.items():
            [request] = scorer.requests(policy, item_content(policy, event))
            answer = await client.complete(request)
            assert answer.prompt_tokens > 10 and answer.completion_tokens == 0
            assert policy.probe is not None and len(answer.embeddings[0]) == policy.probe.backbone.width
            scores[name] = scorer.scores(policy, [answer])
    assert max(scores["replica"].values()) > max(scores["clean"].values())
