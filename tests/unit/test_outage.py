"""A model server outage: review mode escalates at once, hold mode holds.

The client's back-off waits go through an injected ``sleep`` that counts them and advances
a fake clock (which also drives the circuit breaker), so nothing here waits for real time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import circuitbreaker
import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from streamproc.config import InferenceSettings, Settings
from streamproc.errors import InferenceUnavailable
from streamproc.inference import InferenceClient
from streamproc.inference.client import CircuitOpen
from streamproc.metrics import PrometheusWorkerMetrics
from streamproc.schemas import Verdict
from streamproc.stream import InboundRecord
from tests.factories import label_policies, listing_dict, worker_processor
from tests.unit.test_inference_client import REQUEST, completion

SETTINGS = Settings(kafka={"client_id": "worker-1"})


class FakeClock:
    """Monotonic time for the circuit breaker; only the back-off sleeps move it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(circuitbreaker, "monotonic", fake)
    return fake


class Server:
    """A model server that refuses connections while ``down``; once up, an answer waits for
    ``answer`` if set. Counts the requests."""

    def __init__(self) -> None:
        self.down = True
        self.answer: asyncio.Event | None = None
        self.reached = asyncio.Event()  # a request got through while up
        self.calls = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.down:
            raise httpx.ConnectError("connection refused")
        self.reached.set()
        if self.answer is not None:
            await self.answer.wait()
        return httpx.Response(200, json=completion([("N", 0.0)]))


def client(
    server: Server, clock: FakeClock, metrics: PrometheusWorkerMetrics, **settings: Any
) -> InferenceClient:
    config = InferenceSettings(
        base_url="http://model.test/v1",
        model="m",
        **{"max_attempts": 3, "breaker_failures": 2, "breaker_recovery_seconds": 30, **settings},
    )
    return InferenceClient(
        config, metrics, transport=httpx.MockTransport(server), max_backoff_seconds=1.0, sleep=clock.sleep
    )


def listing(n: int) -> InboundRecord:
    value = orjson.dumps(listing_dict(listing_id=f"L-{n}", title=f"Ceramic mug no. {n}"))
    return InboundRecord(SETTINGS.topics.listings, 0, n, f"L-{n}".encode(), value)


async def test_review_mode_escalates_every_item_without_waiting_once_the_circuit_opens(
    clock: FakeClock,
    metrics: PrometheusWorkerMetrics,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = Server()
    caplog.set_level(logging.WARNING, logger="streamproc.inference.client")
    async with client(server, clock, metrics, on_unavailable="review") as model:
        processor = worker_processor(SETTINGS, label_policies(), model, metrics)
        first = await processor.process(listing(0))  # two refused attempts open the circuit
        assert len(clock.sleeps) == 1 and server.calls == 2
        outputs = await asyncio.gather(*(processor.process(listing(n)) for n in range(1, 201)))
        assert not model.available and not model.holding  # open, yet consumption goes on
    assert len(clock.sleeps) == 1  # no back-off wait after the circuit opened
    assert server.calls == 2  # nor a request: every item failed fast
    verdicts = [Verdict.model_validate_json(o[0].value) for o in [first, *outputs]]
    # (the audit draw hashes the pack version, so whether an audit record follows is not this test's)
    topics = [o.topic for o in first if o.topic != SETTINGS.topics.audit]
    assert topics == [SETTINGS.topics.verdicts, SETTINGS.topics.review]
    assert {v.decision for v in verdicts} == {"review"}
    assert verdicts[0].decided_by.id == "unavailable"
    assert {(v.decided_by.kind, v.decided_by.id) for v in verdicts[1:]} == {("error", "circuit_open")}
    assert registry.get_sample_value("streamproc_inference_errors_total", {"kind": "circuit_open"}) == 200
    assert registry.get_sample_value("streamproc_model_circuit_open") == 1
    [warning] = [r.getMessage() for r in caplog.records if r.name == "streamproc.inference.client"]
    assert "unavailable: circuit opened after 2 consecutive failures" in warning
    assert "items are escalated to review without calling it" in warning


async def test_review_mode_sends_one_probe_when_the_recovery_time_is_up(
    clock: FakeClock, metrics: PrometheusWorkerMetrics
) -> None:
    server = Server()
    async with client(server, clock, metrics, on_unavailable="review", max_attempts=1) as model:
        for _ in range(2):
            with pytest.raises(InferenceUnavailable, match="cannot reach"):
                await model.complete(REQUEST)
        clock.now += 31  # past the recovery time: half-open
        server.down, server.answer = False, asyncio.Event()
        probe = asyncio.create_task(model.complete(REQUEST))
        await server.reached.wait()  # the probe waits for the server's answer
        results = await asyncio.gather(*(model.complete(REQUEST) for _ in range(50)), return_exceptions=True)
        assert all(isinstance(r, CircuitOpen) for r in results)  # while one probes, the rest fail fast
        assert server.calls == 3
        server.answer.set()
        assert (await probe).text == "N"
        assert model.available
    assert clock.sleeps == []


async def test_hold_mode_still_holds_items_until_the_server_answers(
    clock: FakeClock, metrics: PrometheusWorkerMetrics, registry: CollectorRegistry
) -> None:
    server = Server()
    async with client(server, clock, metrics, on_unavailable="hold") as model:
        processor = worker_processor(SETTINGS, label_policies(), model, metrics)
        items = [asyncio.ensure_future(processor.process(listing(n))) for n in range(20)]
        while len(clock.sleeps) < 200:  # noqa: ASYNC110 - let the items back off many times
            await asyncio.sleep(0)
        assert not any(item.done() for item in items)
        assert model.holding  # the pipeline pauses consumption meanwhile
        calls_while_down = server.calls
        server.down = False
        outputs = await asyncio.gather(*items)
        assert model.available and not model.holding
    # the server was left alone but for a probe per recovery period (30 s of fake time)
    assert calls_while_down <= 20 + (clock.now - 1000.0) // 30 + 1
    verdicts = [Verdict.model_validate_json(o[0].value) for o in outputs]
    assert all(v.decided_by.kind != "error" and v.usage is not None for v in verdicts)  # the model's
    assert registry.get_sample_value("streamproc_inference_errors_total", {"kind": "circuit_open"})
