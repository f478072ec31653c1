from __future__ import annotations

import asyncio

import pytest

from streamproc.inference.limiter import AdaptiveLimit, ConcurrencyGate


def test_limit_grows_while_latency_is_steady_and_the_limit_is_used() -> None:
    limit = AdaptiveLimit(initial=8, minimum=4, maximum=64)
    for _ in range(200):
        limit.sample(0.1, in_flight=limit.current)
    assert limit.current == 64


def test_limit_shrinks_when_latency_climbs_past_the_tolerance() -> None:
    limit = AdaptiveLimit(initial=64, minimum=4, maximum=64)
    for _ in range(50):
        limit.sample(0.1, in_flight=64)
    for _ in range(50):
        limit.sample(1.0, in_flight=64)  # 10x the baseline: requests are queueing
    assert limit.current < 16


def test_limit_does_not_grow_when_the_caller_does_not_use_it() -> None:
    limit = AdaptiveLimit(initial=16, minimum=4, maximum=64)
    for _ in range(200):
        limit.sample(0.1, in_flight=2)
    assert limit.current == 16


def test_limit_stays_within_bounds_and_rejects_bad_bounds() -> None:
    limit = AdaptiveLimit(initial=1000, minimum=4, maximum=32)
    assert limit.current == 32
    for _ in range(100):
        limit.sample(5.0 if _ % 2 else 0.01, in_flight=32)
    assert 4 <= limit.current <= 32
    with pytest.raises(ValueError, match="minimum"):
        AdaptiveLimit(initial=1, minimum=8, maximum=4)


async def test_gate_never_runs_more_bodies_than_the_limit() -> None:
    gate = ConcurrencyGate(AdaptiveLimit(initial=3, minimum=3, maximum=3))
    running = peak = 0

    async def body() -> None:
        nonlocal running, peak
        async with gate:
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    await asyncio.gather(*(body() for _ in range(20)))
    assert peak == 3
    assert gate.in_flight == 0
