"""The worker's recorder in prometheus-client's multiprocess mode (several worker processes
behind one port): what reaches the files the supervisor serves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

ROOT = Path(__file__).resolve().parents[2]

_CHILD = """
import time
from prometheus_client import CollectorRegistry
from streamproc.metrics import create

metrics = create(CollectorRegistry(), consumed_topics=("listings",), categories=("spam",))
metrics.watch_model(concurrency_limit=lambda: 48.0, prompts_in_flight=lambda: 5.0, circuit_open=lambda: True)
metrics.policies_served({"listings": "listings@1"}, [])
metrics.policies_served({"listings": "listings@2"}, [])
metrics.consumer_lag("listings", 3, 120)
metrics.consumer_lag("listings", 4, 7)
metrics.consumer_lag_removed("listings", 4)
metrics.event_consumed("listings")
time.sleep(1.5)  # the watched gauges are copied into the files once a second
"""


def _served(metrics_dir: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "pid"))): s.value
        for family in registry.collect()
        for s in family.samples
    }


def test_watched_gauges_replaced_packs_and_revoked_partitions_reach_the_files(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):  # two processes: counters add up, livesum gauges too
        subprocess.run([sys.executable, "-c", _CHILD], cwd=ROOT, env=env, check=True, timeout=60)
    served = _served(tmp_path)
    assert served[("streamproc_events_consumed_total", (("topic", "listings"),))] == 2
    assert served[("streamproc_model_concurrency_limit", ())] == 2 * 48
    assert served[("streamproc_model_prompts_in_flight", ())] == 2 * 5
    assert served[("streamproc_model_circuit_open", ())] == 1  # the maximum, not a sum
    info = "streamproc_policy_info"
    assert served[(info, (("name", "listings"), ("version", "listings@2")))] == 1
    assert served[(info, (("name", "listings"), ("version", "listings@1")))] == 0  # replaced
    lag = "streamproc_consumer_lag_records"
    assert served[(lag, (("partition", "3"), ("topic", "listings")))] == 120  # the latest value
    assert served[(lag, (("partition", "4"), ("topic", "listings")))] == 0  # revoked
