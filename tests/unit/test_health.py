"""The metrics port's endpoints, the host's readiness wiring, log formats, consumer lag,
circuit and pause log lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, Gauge

from streamproc.config import InferenceSettings, KafkaSettings, WorkerSettings
from streamproc.errors import ConfigError, InferenceUnavailable
from streamproc.inference import InferenceClient
from streamproc.inference import client as client_module
from streamproc.metrics import NOOP, PrometheusWorkerMetrics
from streamproc.stream import Pipeline, host
from streamproc.stream import lag as lag_module
from streamproc.stream.health import HealthServer, Heartbeat, StatusFile, read_notes
from streamproc.stream.lag import LagTracker, partition_lag
from streamproc.stream.records import InboundRecord, OutboundRecord

from .test_inference_client import REQUEST, completion


def get(server: HealthServer, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.port}{path}", timeout=5)


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Gauge("streamproc_test_value", "A value.", registry=registry).set(7)
    return registry


@pytest.fixture
def server(registry: CollectorRegistry) -> Iterator[HealthServer]:
    running = HealthServer(registry, "127.0.0.1", 0)
    yield running
    running.close()


# -- the endpoints -------------------------------------------------------------------------


def test_readyz_names_the_reasons_with_503_and_says_ready_with_200(server: HealthServer) -> None:
    assert get(server, "/readyz").status_code == 503  # no service attached yet
    reasons = ["Kafka consumer not started", "model server http://m/v1 unavailable: circuit open"]
    server.set_readiness(lambda: reasons)
    answer = get(server, "/readyz")
    assert (answer.status_code, answer.text.splitlines()) == (503, reasons)
    assert answer.headers["content-type"].startswith("text/plain")
    server.set_readiness(list)
    answer = get(server, "/readyz")
    assert (answer.status_code, answer.text) == (200, "ready\n")


def test_readyz_says_the_notices_after_its_answer_without_changing_it(
    server: HealthServer, tmp_path: Path
) -> None:
    note = "policy change rejected, previous packs keep serving: listings.yaml:12: labels: ..."
    server.set_readiness(list, lambda: [note])
    answer = get(server, "/readyz")
    assert (answer.status_code, answer.text.splitlines()) == (200, ["ready", note])
    server.set_readiness(lambda: ["starting"], lambda: [note])
    answer = get(server, "/readyz")
    assert (answer.status_code, answer.text.splitlines()) == (503, ["starting", note])
    # A supervised process passes them on through its status file.
    status = StatusFile(tmp_path / "status.json")
    status.set_readiness(list, lambda: [note])
    status.write()
    assert read_notes(status.path) == [note] and read_notes(tmp_path / "missing.json") == []


def test_a_failing_readiness_check_is_a_503_not_a_crash(server: HealthServer) -> None:
    def broken() -> Sequence[str]:
        raise RuntimeError("boom")

    server.set_readiness(broken)
    answer = get(server, "/readyz")
    assert answer.status_code == 503 and "readiness check failed: RuntimeError('boom')" in answer.text
    server.set_readiness(list)
    assert get(server, "/readyz").status_code == 200


def test_metrics_are_served_at_metrics_and_other_paths_are_404(server: HealthServer) -> None:
    answer = get(server, "/metrics")
    assert answer.status_code == 200 and "streamproc_test_value 7.0" in answer.text
    for path in ("/", "/metricsx", "/healthz/extra", "/favicon.ico"):
        missing = get(server, path)
        assert missing.status_code == 404, path
        assert "/healthz" in missing.text


async def test_healthz_is_503_while_the_event_loop_is_blocked(registry: CollectorRegistry) -> None:
    server = HealthServer(registry, "127.0.0.1", 0, liveness_bound_seconds=0.3)
    server.set_readiness(list)
    beating = asyncio.create_task(server.heartbeat.run(interval=0.05))
    try:
        await asyncio.sleep(0.1)
        alive = await asyncio.to_thread(get, server, "/healthz")
        assert (alive.status_code, alive.text) == (200, "ok\n")
        time.sleep(0.6)  # noqa: ASYNC251 - the point: the loop is blocked, the server is not
        blocked, not_ready = get(server, "/healthz"), get(server, "/readyz")
        assert blocked.status_code == 503 and "event loop unresponsive for " in blocked.text
        assert "(bound 0.3 s)" in blocked.text
        assert not_ready.status_code == 503 and "event loop unresponsive" in not_ready.text
        await asyncio.sleep(0.1)  # the heartbeat runs again
        assert (await asyncio.to_thread(get, server, "/healthz")).status_code == 200
    finally:
        beating.cancel()
        server.close()


def test_heartbeat_age_grows_until_the_next_beat() -> None:
    heartbeat = Heartbeat()
    time.sleep(0.05)
    assert heartbeat.age() >= 0.05
    heartbeat.beat()
    assert heartbeat.age() < 0.05


def test_a_taken_port_is_one_line_naming_its_setting(
    server: HealthServer, registry: CollectorRegistry
) -> None:
    with pytest.raises(ConfigError) as raised:
        host.serve_metrics(registry, "127.0.0.1", server.port, port_setting="STREAMPROC_METRICS__PORT")
    message = str(raised.value)
    assert "\n" not in message
    assert f"cannot serve metrics on 127.0.0.1:{server.port}" in message
    assert "set STREAMPROC_METRICS__PORT to a free port" in message


class FakeService:
    """Answers probes from inside its own run(), as a real service's loop would be running."""

    def __init__(self, ready: bool = True) -> None:
        self.reasons = ["consumer group not joined yet: no partition assignment received"]
        self.server: HealthServer | None = None
        self.seen: list[tuple[int, str]] = []
        self.has_ready = ready

    def ready(self) -> list[str]:
        return list(self.reasons)

    def stop(self) -> None:
        pass

    async def run(self) -> None:
        assert self.server is not None
        self.seen.append(await self._probe("/readyz"))
        self.reasons = []
        self.seen.append(await self._probe("/readyz"))
        self.seen.append(await self._probe("/healthz"))

    async def _probe(self, path: str) -> tuple[int, str]:
        assert self.server is not None
        answer = await asyncio.to_thread(get, self.server, path)
        return answer.status_code, answer.text


class ServiceWithoutReady:
    def __init__(self, server: HealthServer) -> None:
        self.server = server
        self.seen: tuple[int, str] | None = None

    def stop(self) -> None:
        pass

    async def run(self) -> None:
        answer = await asyncio.to_thread(get, self.server, "/readyz")
        self.seen = (answer.status_code, answer.text)


def test_host_answers_readyz_from_the_service_while_it_runs(registry: CollectorRegistry) -> None:
    server = host.serve_metrics(registry, "127.0.0.1", 0, port_setting="STREAMPROC_METRICS__PORT")
    service = FakeService()
    service.server = server
    assert get(server, "/readyz").status_code == 503  # not running yet
    host.run(service, server)
    assert service.seen == [
        (503, "consumer group not joined yet: no partition assignment received\n"),
        (200, "ready\n"),
        (200, "ok\n"),
    ]
    with pytest.raises(httpx.ConnectError):  # closed with the service
        get(server, "/readyz")


def test_a_service_without_ready_is_ready_while_it_runs(registry: CollectorRegistry) -> None:
    server = host.serve_metrics(registry, "127.0.0.1", 0, port_setting="STREAMPROC_METRICS__PORT")
    service = ServiceWithoutReady(server)
    host.run(service, server)
    assert service.seen == (200, "ready\n")


# -- log formats ---------------------------------------------------------------------------


def _to(stream: io.StringIO) -> None:
    for handler in logging.getLogger().handlers:
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)


def test_json_logs_are_one_object_per_line_with_extra_fields(root_logging: io.StringIO) -> None:
    host.configure_logging("info", "json")
    _to(root_logging)
    logging.getLogger("streamproc.test").warning("window %s", "full", extra={"partition": 3})
    logging.getLogger("streamproc.test").debug("not shown at info")
    lines = root_logging.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert list(entry)[:4] == ["time", "level", "logger", "message"]
    assert (entry["level"], entry["logger"], entry["message"], entry["partition"]) == (
        "WARNING",
        "streamproc.test",
        "window full",
        3,
    )
    assert datetime.fromisoformat(entry["time"]).utcoffset() is not None


def test_json_logs_carry_tracebacks_in_the_same_object(root_logging: io.StringIO) -> None:
    host.configure_logging("info", "json")
    _to(root_logging)
    try:
        int("bad")
    except ValueError:
        logging.getLogger("streamproc.test").exception("failed")
    (line,) = root_logging.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["message"] == "failed" and "ValueError: invalid literal" in entry["exc_info"]


def test_text_logs_are_todays_one_line_format(root_logging: io.StringIO) -> None:
    host.configure_logging("info")
    _to(root_logging)
    logging.getLogger("streamproc.test").info("hello %d", 1, extra={"ignored": True})
    (line,) = root_logging.getvalue().splitlines()
    assert line.startswith("[") and line.endswith("] INFO streamproc.test: hello 1")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_startup_summary_is_one_line_with_every_field(root_logging: io.StringIO, log_format: Any) -> None:
    host.configure_logging("info", log_format)
    _to(root_logging)
    fields = {
        "bootstrap_servers": "kafka:9092",
        "group_id": "streamproc",
        "model_url": "http://vllm:8000/v1",
        "model_name": "m",
        "packs": ["marketplace-listings@3", "short-videos@2"],
        "metrics_address": "0.0.0.0:9108",
    }
    host.log_startup("worker", fields)
    (line,) = root_logging.getvalue().splitlines()
    if log_format == "json":
        entry = json.loads(line)
        assert entry["service"] == "worker" and entry["version"]
        assert {key: entry[key] for key in fields} == fields
        assert entry["message"].startswith("starting service=worker, version=")
    else:
        assert "starting service=worker, version=" in line
        assert "packs=[marketplace-listings@3, short-videos@2]" in line
        assert "model_url=http://vllm:8000/v1" in line and "metrics_address=0.0.0.0:9108" in line


# -- consumer lag --------------------------------------------------------------------------

A, B, C = (TopicPartition("content.listings.v1", p) for p in range(3))


def test_partition_lag_is_end_minus_position_for_partitions_with_both() -> None:
    ends = {A: 120, B: 50, C: None}
    positions = {A: 100, B: 51, C: 7}
    assert partition_lag(ends, positions) == {A: 20, B: 0}  # B: end read before the fetch moved
    assert partition_lag({A: 10}, {}) == {}


class FakeConsumer:
    def __init__(self) -> None:
        self.assigned = {A, B}
        self.paused_tps: set[TopicPartition] = set()
        self.highwaters: dict[TopicPartition, int | None] = {A: 100, B: None}
        self.broker_ends = {A: 130, B: 40, C: 9}
        self.positions = {A: 90, B: 10, C: 0}
        self.asked: list[list[TopicPartition]] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_tps)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp)

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.asked.append(sorted(tps))
        return {tp: self.broker_ends[tp] for tp in tps}

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


def lag_series(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for family in registry.collect()
        if family.name == "streamproc_consumer_lag_records"
        for s in family.samples
    }


async def test_lag_uses_fetched_ends_and_asks_the_broker_for_paused_or_unfetched_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = CollectorRegistry()
    consumer = FakeConsumer()
    tracker = LagTracker(consumer, PrometheusWorkerMetrics(registry))
    assert await tracker.refresh() == {A: 10, B: 30}  # B not fetched yet: the broker's end
    assert consumer.asked == [[B]]
    assert lag_series(registry) == {("content.listings.v1", "0"): 10, ("content.listings.v1", "1"): 30}

    consumer.paused_tps = {A}  # a paused partition's fetched end goes stale
    consumer.highwaters[B] = 45
    assert await tracker.refresh() == {A: 10, B: 35}  # the broker was asked < 5 s ago: A's last end
    assert consumer.asked == [[B]]
    monkeypatch.setattr(lag_module, "_BROKER_QUERY_INTERVAL_SECONDS", 0.0)
    assert await tracker.refresh() == {A: 40, B: 35}  # now from the broker
    assert consumer.asked == [[B], [A]]


async def test_lag_series_of_revoked_partitions_are_removed() -> None:
    registry = CollectorRegistry()
    consumer = FakeConsumer()
    tracker = LagTracker(consumer, PrometheusWorkerMetrics(registry))
    await tracker.refresh()
    tracker.forget([B])  # revoked
    assert lag_series(registry) == {("content.listings.v1", "0"): 10}
    consumer.assigned = {C}  # a rebalance moved A away and brought C
    consumer.highwaters[C] = 9
    assert await tracker.refresh() == {C: 9}
    assert lag_series(registry) == {("content.listings.v1", "2"): 9}


# -- circuit and pause log lines -----------------------------------------------------------


async def test_circuit_opening_is_a_warning_repeated_while_open_and_closing_an_info(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "_CIRCUIT_WARNING_INTERVAL_SECONDS", 0.5)
    down = True

    def handler(request: httpx.Request) -> httpx.Response:
        if down:
            raise httpx.ConnectError("connection refused")
        return httpx.Response(200, json=completion([("N", 0.0)]))

    settings = InferenceSettings(
        base_url="http://model.test/v1",
        model="m",
        max_attempts=1,
        breaker_failures=2,
        breaker_recovery_seconds=1,
        on_unavailable="review",
    )
    caplog.set_level(logging.INFO, logger="streamproc.inference.client")
    async with InferenceClient(settings, NOOP, transport=httpx.MockTransport(handler)) as client:
        for _ in range(3):
            with pytest.raises(InferenceUnavailable):
                await client.complete(REQUEST)
        assert not client.available and not client.available  # polled often: logged once
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "model server http://model.test/v1 unavailable: circuit opened" in warnings[0].getMessage()
        assert "last error: cannot reach http://model.test/v1" in warnings[0].getMessage()
        await asyncio.sleep(0.55)
        assert not client.available
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2 and "circuit still open" in warnings[1].getMessage()
        down = False
        await asyncio.sleep(0.5)  # past the recovery time (1 s): the next request probes
        await client.complete(REQUEST)
    closed = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert closed == ["model server http://model.test/v1 is answering again: circuit closed"]


async def _handler(record: InboundRecord) -> list[OutboundRecord]:
    return []


async def test_pause_and_resume_lines_say_why(caplog: pytest.LogCaptureFixture) -> None:
    model_ready = True
    pipeline = Pipeline(
        KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        WorkerSettings(max_inflight_items=4),
        _handler,
        NOOP,
        topics=["content.listings.v1"],
        ready=lambda: model_ready,
    )
    caplog.set_level(logging.INFO, logger="streamproc.stream.pipeline")
    try:
        assert pipeline.readiness() == ["Kafka consumer not started"]
        for offset in range(4):
            pipeline._ledger.started(A, offset)
        pipeline._apply_backpressure()
        model_ready = False
        pipeline._apply_backpressure()
        pipeline._apply_backpressure()  # no change: no line
        model_ready = True
        pipeline._apply_backpressure()
        pipeline._ledger.forget([A])
        pipeline._apply_backpressure()
        model_ready = False
        pipeline._apply_backpressure()
        model_ready = True
        pipeline._apply_backpressure()
        pipeline.stop()
        assert pipeline.readiness() == ["pipeline stopping"]
    finally:
        await pipeline._consumer.stop()
        await pipeline._producer.stop()
    assert [r.getMessage() for r in caplog.records] == [
        "pausing consumption: window full (4 of 4 records uncommitted)",
        "consumption still paused: model server circuit open, items held until it answers (4 of 4 records "
        "uncommitted)",
        "consumption still paused: window full (4 of 4 records uncommitted)",
        "resuming consumption: window drained (0 records uncommitted)",
        "pausing consumption: model server circuit open, items held until it answers (0 of 4 records "
        "uncommitted)",
        "resuming consumption: model server circuit no longer open (0 records uncommitted)",
    ]
