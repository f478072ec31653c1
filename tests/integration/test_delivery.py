"""Delivery under faults: the in-flight window, safe commits, SIGKILL, and a model server outage."""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from load.faults import fault_proxy
from streamproc.config import KafkaSettings, Settings, TopicSettings, WorkerSettings
from streamproc.dev.devstack import Broker, VllmServer
from streamproc.metrics import create as create_metrics
from streamproc.stream import InboundRecord, OutboundRecord, Pipeline
from tests.factories import listing_dict
from tests.integration.conftest import SESSION_TIMEOUT_SECONDS, StartWorker, group_kafka, label_policy_paths
from tests.integration.kafka_io import (
    committed_offsets,
    consume,
    produce,
    publish_content,
    verdicts_by_id,
    verdicts_for,
)

pytestmark = pytest.mark.integration


async def until_committed(bootstrap: str, group_id: str, topic: str, count: int) -> None:
    """Wait until the group has committed ``count`` offsets of a fresh topic in all."""
    deadline = asyncio.get_running_loop().time() + 120
    while sum((await committed_offsets(bootstrap, group_id, topic)).values()) < count:
        assert asyncio.get_running_loop().time() < deadline, f"{group_id} never committed {count} offsets"
        await asyncio.sleep(0.5)


async def test_window_keeps_key_order_and_never_commits_past_an_unfinished_item(
    broker: Broker, topics: TopicSettings
) -> None:
    """Hundreds of items in flight finish out of order; one is held back on purpose."""
    group_id = f"window-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=group_kafka(broker, group_id),
        topics=topics,
        worker=WorkerSettings(max_inflight_items=400, commit_interval_seconds=0.2),
    )
    release = asyncio.Event()
    held: list[InboundRecord] = []
    peak = 0

    async def handler(record: InboundRecord) -> list[OutboundRecord]:
        nonlocal peak
        peak = max(peak, pipeline.in_flight)
        if record.key == b"L-held":
            held.append(record)
            await release.wait()
        else:
            await asyncio.sleep(random.uniform(0, 0.3))  # finish out of order
        return [OutboundRecord(topics.verdicts, record.key, record.value or b"")]

    pipeline = Pipeline(
        settings.kafka,
        settings.worker,
        handler,
        create_metrics(CollectorRegistry()),
        topics=[topics.listings],
    )
    # 40 listings x 10 revisions each, plus one listing whose item never finishes until released.
    events = [(b"L-held", orjson.dumps({"revision": 0}))] + [
        (f"L-{n}".encode(), orjson.dumps({"revision": revision})) for revision in range(10) for n in range(40)
    ]
    await produce(broker.bootstrap, topics.listings, events)
    running = asyncio.create_task(pipeline.run())
    try:
        outputs = await consume(broker.bootstrap, [topics.verdicts], len(events) - 1, within=60)
        assert len(outputs) == len(events) - 1
        await asyncio.sleep(1.0)  # several commit intervals
        committed = await committed_offsets(broker.bootstrap, group_id, topics.listings)
        held_tp = TopicPartition(held[0].topic, held[0].partition)
        assert committed.get(held_tp, 0) <= held[0].offset  # never past the unfinished item
        release.set()
        await asyncio.sleep(1.0)
        ends = await committed_offsets(broker.bootstrap, group_id, topics.listings)
    finally:
        pipeline.stop()
        await running
    assert peak >= 200  # the window was used across partitions
    assert sum(ends.values()) == len(events)  # every offset committed once all finished
    revisions: dict[bytes | None, list[int]] = defaultdict(list)
    for output in outputs:
        revisions[output.key].append(orjson.loads(output.value)["revision"])
    assert all(seen == list(range(10)) for seen in revisions.values()), "a key's revisions came out of order"


async def test_items_slower_than_the_session_timeout_cause_no_rebalance(
    broker: Broker, topics: TopicSettings
) -> None:
    settings = Settings(
        kafka=KafkaSettings(
            bootstrap_servers=broker.bootstrap,
            group_id=f"slow-{uuid.uuid4().hex[:8]}",
            session_timeout_seconds=SESSION_TIMEOUT_SECONDS,
            rebalance_timeout_seconds=SESSION_TIMEOUT_SECONDS,
        ),
        topics=topics,
    )
    registry = CollectorRegistry()

    async def slow(record: InboundRecord) -> list[OutboundRecord]:
        await asyncio.sleep(2.5 * SESSION_TIMEOUT_SECONDS)  # a model call far slower than the session
        return [OutboundRecord(topics.verdicts, record.key, record.value or b"")]

    pipeline = Pipeline(
        settings.kafka, settings.worker, slow, create_metrics(registry), topics=[topics.listings]
    )
    await produce(broker.bootstrap, topics.listings, [(f"L-s{i}".encode(), b"{}") for i in range(20)])
    running = asyncio.create_task(pipeline.run())
    try:
        outputs = await consume(broker.bootstrap, [topics.verdicts], 20, within=60)
        revoked = registry.get_sample_value("streamproc_rebalances_total", {"event": "revoked"})
        assigned = registry.get_sample_value("streamproc_rebalances_total", {"event": "assigned"})
    finally:
        pipeline.stop()
        await running
    assert len(outputs) == 20
    assert (assigned, revoked) == (1, 0)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)


# Minutes of generative requests on a CPU server; test_faults.py's repeated SIGKILL checks the
# same guarantees in `make test`.
@pytest.mark.reliability
async def test_sigkill_with_hundreds_in_flight_loses_nothing_and_bounds_duplicates(
    broker: Broker, topics: TopicSettings, start_worker: StartWorker, tmp_path: Path
) -> None:
    window, count = 250, 300
    group = {"STREAMPROC_KAFKA__GROUP_ID": f"kill-{uuid.uuid4().hex[:8]}"}
    env = {
        **group,
        # label_logprob: 300 items are 300 requests, not 2100 (the channel scorer's 7 per
        # listing), which a CPU server would not answer within the time allowed.
        **label_policy_paths(tmp_path / "packs"),
        "STREAMPROC_WORKER__MAX_INFLIGHT_ITEMS": str(window),
        "STREAMPROC_INFERENCE__MAX_INFLIGHT": "256",
        "STREAMPROC_INFERENCE__ADAPTIVE_CONCURRENCY": "false",
        "STREAMPROC_INFERENCE__TIMEOUT_SECONDS": "300",
        "STREAMPROC_WORKER__COMMIT_INTERVAL_SECONDS": "0.5",
    }
    items = [listing_dict(listing_id=f"L-k{i}", title=f"Ceramic mug no. {i}") for i in range(count)]
    await publish_content(broker.bootstrap, topics, items)
    first = start_worker(**env)
    wait_for(
        lambda: (
            first.total("streamproc_model_requests_in_flight") >= 200
            and first.total("streamproc_verdicts_total") >= 20
        ),
        240,
        "hundreds of model requests in flight and some verdicts",
    )
    in_flight = first.total("streamproc_items_in_flight")
    assert first.process.process is not None
    first.process.process.send_signal(signal.SIGKILL)
    first.process.process.wait(10)
    assert in_flight >= 200

    start_worker(**env)
    expected = sorted(str(x["listing_id"]) for x in items)
    received = await verdicts_for(broker.bootstrap, topics.verdicts, expected, within=400)
    assert sorted(verdicts_by_id(received, topics.verdicts)) == expected  # every input has a verdict
    # Replayed items may still be in flight: once every input offset is committed, all their
    # outputs are acknowledged, and a read from the start sees every duplicate.
    await until_committed(broker.bootstrap, group["STREAMPROC_KAFKA__GROUP_ID"], topics.listings, count)
    received = await consume(broker.bootstrap, [topics.verdicts], len(received))
    by_id = verdicts_by_id(received, topics.verdicts)
    assert sorted(by_id) == expected
    duplicates = sum(len(v) - 1 for v in by_id.values())
    assert duplicates <= window
    for copies in by_id.values():
        assert len({v.idempotency_key for v in copies}) == 1


async def test_model_server_outage_pauses_consumption_and_holds_items_until_it_is_back(
    broker: Broker, embedding_server: VllmServer, topics: TopicSettings, start_worker: StartWorker
) -> None:
    """The shipped packs' model server (the embedding server) goes away and comes back. The
    worker reaches it through a proxy, stopped and started again on the same port: connections
    are refused meanwhile, as for a stopped server, while the session's server keeps serving
    the other tests."""
    with fault_proxy(embedding_server.base_url) as proxy:
        port = proxy.port
        worker = start_worker(
            STREAMPROC_EMBEDDING__BASE_URL=proxy.base_url,
            STREAMPROC_INFERENCE__BREAKER_FAILURES="3",
            STREAMPROC_INFERENCE__BREAKER_RECOVERY_SECONDS="2",
            STREAMPROC_INFERENCE__TIMEOUT_SECONDS="60",
        )

        def listings(prefix: str, n: int) -> list[tuple[bytes, bytes]]:
            ids = [f"{prefix}{i}" for i in range(n)]
            return [(id_.encode(), orjson.dumps(listing_dict(listing_id=id_))) for id_ in ids]

        # Few items: the test is about holding, not throughput.
        before = listings("L-before", 4)
        await produce(broker.bootstrap, topics.listings, before)
        await consume(broker.bootstrap, [topics.verdicts], len(before), within=120)

    during = listings("L-during", 12)
    await produce(broker.bootstrap, topics.listings, during)
    wait_for(
        lambda: (
            worker.total("streamproc_consumption_paused") == 1
            and worker.total("streamproc_model_circuit_open") == 1
        ),
        60,
        "the worker to open the circuit and pause consumption",
    )
    await asyncio.sleep(3)
    decided_while_down = worker.total("streamproc_verdicts_total")
    assert decided_while_down == len(before)  # nothing decided, nothing escalated, nothing approved

    with fault_proxy(embedding_server.base_url, port):  # the server is back
        received = await consume(broker.bootstrap, [topics.verdicts], len(before) + len(during), within=240)
        by_id = verdicts_by_id(received, topics.verdicts)
        assert len(by_id) == len(before) + len(during)
        for copies in by_id.values():
            for verdict in copies:
                assert verdict.decided_by.kind != "error"
                assert verdict.usage is not None  # decided by the model once it was back
        wait_for(lambda: worker.total("streamproc_consumption_paused") == 0, 60, "consumption to resume")
    assert worker.total("streamproc_inference_errors_total", kind="unavailable") > 0
    assert worker.total("streamproc_rebalances_total", event="revoked") == 0  # the group stayed stable
