"""`streamproc worker` as two processes in one container: one consumer group, one metrics port."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from streamproc.config import TopicSettings
from streamproc.dev.devstack import Broker
from streamproc.schemas import Verdict
from streamproc.schemas.dead_letter import DeadLetter
from tests.factories import group_gone, listing_dict, video_dict
from tests.integration.conftest import StartWorker, label_policy_paths, wait_until
from tests.integration.kafka_io import consume, publish_content

pytestmark = pytest.mark.integration

LISTINGS, VIDEOS, PARTITIONS = 40, 20, 12


async def _bad_record_per_partition(bootstrap: str, topic: str) -> None:
    """One undecodable record on each listings partition: its dead letter names the member
    that held the partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition in range(PARTITIONS):
            await producer.send_and_wait(
                topic, b"{not json", key=f"bad-{partition}".encode(), partition=partition
            )
    finally:
        await producer.stop()


async def test_two_processes_share_the_group_and_one_port_counts_for_both(
    broker: Broker, topics: TopicSettings, start_worker: StartWorker, tmp_path: Path
) -> None:
    # label_logprob: 60 requests rather than the channel scorer's 440 (7 per listing, 8 per
    # video), which a CPU server would not answer in time; the point here is the processes.
    worker = start_worker(
        STREAMPROC_WORKER__PROCESSES="2", STREAMPROC_KAFKA__CLIENT_ID="mp", **label_policy_paths(tmp_path)
    )
    ready = f"http://127.0.0.1:{worker.metrics_port}/readyz"
    # Ready only once both members hold an assignment: publishing then causes no rebalance.
    await wait_until(lambda: httpx.get(ready, timeout=5).status_code == 200, "both processes ready", 120)

    listings = [listing_dict(listing_id=f"L-mp-{i}") for i in range(LISTINGS)]
    videos = [video_dict(video_id=f"V-mp-{i}") for i in range(VIDEOS)]
    await publish_content(broker.bootstrap, topics, listings, videos)
    await _bad_record_per_partition(broker.bootstrap, topics.listings)

    inputs = LISTINGS + VIDEOS + PARTITIONS
    received = await consume(broker.bootstrap, [topics.verdicts, topics.dlq], inputs, within=300)
    verdicts = [Verdict.model_validate_json(r.value) for r in received if r.topic == topics.verdicts]
    dead = [DeadLetter.model_validate_json(r.value) for r in received if r.topic == topics.dlq]

    # Every input took exactly one path: one verdict per item, one dead letter per bad record.
    ids = Counter(v.content_id for v in verdicts)
    expected = {x["listing_id"] for x in listings} | {x["video_id"] for x in videos}
    assert set(ids) == expected and set(ids.values()) == {1}, ids
    assert sorted(d.source_partition for d in dead) == list(range(PARTITIONS))
    # Both members held partitions, none held the same one.
    by_member: dict[str, set[int]] = {}
    for letter in dead:
        by_member.setdefault(letter.worker, set()).add(letter.source_partition)
    assert set(by_member) == {"mp-0", "mp-1"}, by_member
    assert not by_member["mp-0"] & by_member["mp-1"]

    # One /metrics for both: counters and histograms summed over the two processes.
    await wait_until(
        lambda: worker.total("streamproc_verdicts_total") == len(verdicts), "the verdict count on /metrics"
    )
    assert worker.total("streamproc_events_consumed_total") == inputs
    assert worker.total("streamproc_dead_letters_total") == PARTITIONS
    assert worker.total("streamproc_end_to_end_latency_seconds_count") == len(verdicts)
    assert worker.total("streamproc_items_in_flight") == 0
    # Gauges follow their modes: the two adaptive limits add up (each at least its floor of 32).
    await wait_until(lambda: worker.total("streamproc_model_concurrency_limit") >= 64, "both limits summed")
    assert worker.total("streamproc_model_circuit_open") == 0
    assert worker.total("streamproc_policy_info") >= 1

    # SIGTERM to the supervisor alone, as Kubernetes sends it: everything stops cleanly.
    process = worker.process.process
    assert process is not None
    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 60) == 0, worker.process.log_tail()
    assert group_gone(process.pid, within=30.0), "a worker process outlived the supervisor"
    log = worker.process.log_path.read_text()
    assert "worker-0" in log and "worker-1" in log and "stopped" in log
