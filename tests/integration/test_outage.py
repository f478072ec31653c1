"""Crashes and outages with a real broker and real worker processes, no model server:
every worker here points at a port nobody listens on, in review mode."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator

import pytest

from streamproc.config import TopicSettings
from streamproc.dev.devstack import Broker, free_port
from tests.factories import listing_dict
from tests.integration.conftest import ROOT, StartWorker, Worker, _start
from tests.integration.kafka_io import consume, publish_content, verdicts_by_id, verdicts_for
from tests.integration.test_delivery import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def offline_worker(broker: Broker, topics: TopicSettings) -> Iterator[StartWorker]:
    """``start(**env)``: a worker whose model server is unreachable (connection refused)."""
    started: list[Worker] = []
    group = f"outage-{uuid.uuid4().hex[:8]}"

    def start(**env: str) -> Worker:
        port = free_port()
        settings_env = {
            "STREAMPROC_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
            "STREAMPROC_KAFKA__GROUP_ID": group,
            "STREAMPROC_METRICS__HOST": "127.0.0.1",
            "STREAMPROC_METRICS__PORT": str(port),
            "STREAMPROC_INFERENCE__BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
            "STREAMPROC_INFERENCE__ON_UNAVAILABLE": "review",
            "STREAMPROC_POLICY__PATHS": json.dumps([str(ROOT / "policies")]),
            **{f"STREAMPROC_TOPICS__{field.upper()}": name for field, name in topics.model_dump().items()},
            **env,
        }
        started.append(_start("worker", port, settings_env))
        return started[-1]

    yield start
    for worker in started:
        worker.process.stop()


def listings(prefix: str, count: int) -> list[dict[str, object]]:
    return [listing_dict(listing_id=f"{prefix}{i}", title=f"Ceramic mug no. {i}") for i in range(count)]


async def test_unreachable_model_in_review_mode_escalates_everything_without_pausing(
    broker: Broker, topics: TopicSettings, offline_worker: StartWorker
) -> None:
    count = 3000
    items = listings("L-o", count)
    await publish_content(broker.bootstrap, topics, items)
    started = time.monotonic()
    worker = offline_worker()
    expected = sorted(str(x["listing_id"]) for x in items)
    received = await verdicts_for(broker.bootstrap, topics.verdicts, expected, within=300)
    seconds = time.monotonic() - started
    by_id = verdicts_by_id(received, topics.verdicts)
    assert sorted(by_id) == expected  # every listing got a verdict
    verdicts = [v for copies in by_id.values() for v in copies]
    assert {v.decision for v in verdicts} == {"review"}  # none approved
    assert {(v.decided_by.kind, v.decided_by.id) for v in verdicts} <= {
        ("error", "circuit_open"),
        ("error", "unavailable"),
    }
    assert worker.total("streamproc_inference_errors_total", kind="circuit_open") > count / 2
    assert worker.total("streamproc_model_circuit_open") == 1
    assert worker.total("streamproc_consumption_paused") == 0
    log = worker.process.log_tail(lines=1_000_000)
    assert "items held" not in log  # the pipeline never paused for the model server
    assert "unavailable: circuit opened" in log and "items are escalated to review" in log
    stamps = sorted(v.produced_at for v in verdicts)
    rate = len(stamps) / max((stamps[-1] - stamps[0]).total_seconds(), 1e-3)
    print(
        f"\n{count} listings escalated in {seconds:.1f} s from the worker's start, {rate:.0f}/s once assigned"
    )


async def test_a_restarted_member_with_the_same_instance_id_takes_its_partitions_back(
    broker: Broker, topics: TopicSettings, offline_worker: StartWorker
) -> None:
    # The production session timeout: the restarted member is back well within it.
    env = {
        "STREAMPROC_KAFKA__GROUP_INSTANCE_ID": "worker-0",
        "STREAMPROC_KAFKA__SESSION_TIMEOUT_SECONDS": "10",
    }
    await publish_content(broker.bootstrap, topics, listings("L-a", 50))
    first = offline_worker(**env)
    await consume(broker.bootstrap, [topics.verdicts], 50, within=120)
    assert first.process.process is not None
    first.process.process.send_signal(signal.SIGKILL)
    first.process.process.wait(10)

    await publish_content(broker.bootstrap, topics, listings("L-b", 50))
    restarted = time.monotonic()
    second = offline_worker(**env)
    wait_for(
        lambda: second.total("streamproc_verdicts_total") > 0, 120, "a verdict from the restarted worker"
    )
    seconds = time.monotonic() - restarted
    received = await consume(broker.bootstrap, [topics.verdicts], 100, within=120)
    assert {f"L-b{i}" for i in range(50)} <= set(verdicts_by_id(received, topics.verdicts))
    print(f"\nfirst verdict {seconds:.1f} s after the restart (same group instance id)")
