"""Probes and lag on the metrics port of real processes: real broker, real vLLM server."""

from __future__ import annotations

import json

import httpx
import orjson
import pytest

from streamproc.config import TopicSettings
from streamproc.dev.devstack import Broker, free_port
from tests.factories import listing_dict
from tests.integration.conftest import StartQuality, StartWorker, Worker, wait_until
from tests.integration.kafka_io import produce

pytestmark = pytest.mark.integration

LAG = "streamproc_consumer_lag_records"
#: What /readyz may say before the consumer group has assigned partitions.
BEFORE_ASSIGNMENT = (
    "service starting",
    "starting: model client and pipeline not set up yet",
    "Kafka consumer not started",
    "consumer group not joined yet: no partition assignment received",
)


def probe(worker: Worker, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{worker.metrics_port}{path}", timeout=5)


def lag_series(worker: Worker) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["topic"], dict(labels)["partition"]): value
        for (name, labels), value in worker.metrics().items()
        if name == LAG
    }


async def test_readyz_turns_200_once_the_group_assigned_partitions_and_lag_is_exported(
    broker: Broker, topics: TopicSettings, start_worker: StartWorker
) -> None:
    worker = start_worker()
    first = probe(worker, "/readyz")  # the port just opened: the group join takes longer
    assert first.status_code == 503, first.text
    assert set(first.text.splitlines()) <= set(BEFORE_ASSIGNMENT), first.text
    seen: list[int] = []

    def ready() -> bool:
        seen.append(probe(worker, "/healthz").status_code)
        return probe(worker, "/readyz").status_code == 200

    await wait_until(ready, "/readyz to answer 200 after the group assignment", within=60)
    assert probe(worker, "/readyz").text == "ready\n"
    assert "assigned 24 partitions" in worker.process.log_tail(200)
    assert set(seen) == {200}, seen  # the event loop stayed responsive throughout
    assert probe(worker, "/nope").status_code == 404

    await produce(broker.bootstrap, topics.listings, [(b"L-1", orjson.dumps(listing_dict()))])
    await wait_until(lambda: worker.total("streamproc_verdicts_total") == 1, "a verdict")
    # Every assigned partition has a series; once the one item is fetched, nothing is behind.
    await wait_until(
        lambda: len(series := lag_series(worker)) == 24 and set(series.values()) == {0.0},
        "a lag series of 0 per assigned partition",
        30,
    )
    assert {topic for topic, _ in lag_series(worker)} == {topics.listings, topics.videos}


async def test_readyz_is_503_while_the_model_circuit_is_open_and_lag_grows_while_paused(
    broker: Broker, topics: TopicSettings, start_worker: StartWorker
) -> None:
    model_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    worker = start_worker(
        STREAMPROC_INFERENCE__BASE_URL=model_url,
        STREAMPROC_EMBEDDING__BASE_URL=model_url,  # the shipped packs' server, down as well
        STREAMPROC_INFERENCE__MAX_ATTEMPTS="2",
        STREAMPROC_INFERENCE__BREAKER_FAILURES="2",
        STREAMPROC_INFERENCE__BREAKER_RECOVERY_SECONDS="600",
        STREAMPROC_INFERENCE__ON_UNAVAILABLE="hold",
        STREAMPROC_WORKER__LOG_FORMAT="json",
    )
    await wait_until(lambda: probe(worker, "/readyz").status_code == 200, "/readyz 200", within=60)

    await produce(broker.bootstrap, topics.listings, [(b"L-1", orjson.dumps(listing_dict()))])
    circuit_open = f"model server {model_url} unavailable: circuit open"
    await wait_until(lambda: circuit_open in probe(worker, "/readyz").text, "/readyz naming the circuit")
    answer = probe(worker, "/readyz")
    assert answer.status_code == 503 and answer.text == circuit_open + "\n"
    assert probe(worker, "/healthz").status_code == 200  # alive: it waits for the model server
    await wait_until(lambda: worker.total("streamproc_consumption_paused") == 1, "consumption paused")

    # Paused partitions are not fetched: their lag comes from the broker's end offsets.
    more = [(b"L-2", orjson.dumps(listing_dict(listing_id="L-2", revision=r))) for r in range(3)]
    await produce(broker.bootstrap, topics.listings, more)
    await wait_until(lambda: worker.total(LAG) == 3, "3 records of lag while paused", within=30)

    entries = [json.loads(line) for line in worker.process.log_path.read_text().splitlines() if line]
    messages = [e["message"] for e in entries]
    summary = next(e for e in entries if e["message"].startswith("starting service=worker"))
    assert summary["model_url"] == model_url and summary["group_id"].startswith("streamproc-test-")
    assert summary["metrics_address"] == f"127.0.0.1:{worker.metrics_port}" and summary["packs"]
    warning = next(e for e in entries if "circuit opened" in e["message"])
    assert warning["level"] == "WARNING" and f"cannot reach {model_url}" in warning["message"]
    assert any(m.startswith("pausing consumption: model server circuit open") for m in messages)


async def test_quality_service_is_ready_once_assigned(start_quality: StartQuality) -> None:
    quality = start_quality()
    assert probe(quality, "/healthz").status_code == 200
    await wait_until(lambda: probe(quality, "/readyz").status_code == 200, "quality /readyz 200", 60)
    assert "streamproc_quality_store_items" in probe(quality, "/metrics").text
