"""Delivery under faults with a real model server: SIGKILL with hundreds in flight, and the
model server going away and coming back while the worker holds its items."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import orjson
import pytest

from load.faults import fault_proxy
from streamproc.config import TopicSettings
from streamproc.dev.devstack import Broker, VllmServer
from tests.factories import listing_dict
from tests.integration.conftest import StartWorker, label_policy_paths
from tests.integration.kafka_io import consume, produce, publish_content
from tests.integration.test_delivery import until_committed, verdicts_by_id, wait_for

pytestmark = pytest.mark.integration


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
    # Duplicates count towards the records read: read until every input has a verdict.
    received = await consume(
        broker.bootstrap,
        [topics.verdicts],
        count,
        within=400,
        until=lambda records: sorted(verdicts_by_id(records, topics.verdicts)) == expected,
    )
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
