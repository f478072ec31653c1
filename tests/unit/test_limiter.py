from __future__ import annotations

import asyncio

import pytest

from streamproc.inference.limiter import AdaptiveLimit, ConcurrencyGate


def test_limit_starts_at_its_minimum_and_grows_while_latency_is_flat() -> None:
    limit = AdaptiveLimit(minimum=4, maximum=64)
    assert limit.current == 4
    for _ in range(1000):
        limit.sample(0.1, in_flight=limit.current)
    assert limit.current == 64


def test_limit_shrinks_when_latency_climbs_past_the_tolerance() -> None:
    limit = AdaptiveLimit(minimum=4, maximum=64)
    for _ in range(1000):
        limit.sample(0.1, in_flight=limit.current)
    for _ in range(100):
        limit.sample(1.0, in_flight=limit.current)  # 10x the no-load latency: requests queue
    assert limit.current < 16


def test_limit_does_not_grow_when_the_caller_does_not_use_it() -> None:
    limit = AdaptiveLimit(minimum=16, maximum=64)
    for _ in range(500):
        limit.sample(0.1, in_flight=2)
    assert limit.current == 16


def test_limit_settles_low_on_a_server_that_serves_one_request_at_a_time() -> None:
    """Latency grows with every request in flight (a saturated server): the limit stays low."""
    limit = AdaptiveLimit(minimum=8, maximum=256)
    for _ in range(3000):
        limit.sample(0.1 * limit.current, in_flight=limit.current)
    assert limit.current <= 20  # latency stays within about twice that at the minimum


def test_limit_grows_on_a_batching_server_until_latency_rises() -> None:
    """Flat latency up to 100 in flight, then linear: the limit ends near the knee."""
    limit = AdaptiveLimit(minimum=8, maximum=1024)
    for _ in range(5000):
        limit.sample(0.05 * max(1.0, limit.current / 100), in_flight=limit.current)
    assert 100 <= limit.current <= 250


def test_slower_prompts_move_the_no_load_latency() -> None:
    limit = AdaptiveLimit(minimum=8, maximum=256)
    for _ in range(1000):
        limit.sample(0.1 * limit.current, in_flight=limit.current)
    for _ in range(1000):
        limit.sample(0.3 * limit.current, in_flight=limit.current)  # three times slower per request
    assert 8 <= limit.current <= 20  # neither stuck at the floor nor grown into a queue


def test_bad_bounds_are_rejected() -> None:
    with pytest.raises(ValueError, match="minimum"):
        AdaptiveLimit(minimum=8, maximum=4)


async def test_gate_never_runs_more_bodies_than_the_limit() -> None:
    gate = ConcurrencyGate(AdaptiveLimit(minimum=3, maximum=3))
    running = peak = 0

    async def body() -> None:
        nonlocal running, peak
        async with gate.slots():
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    await asyncio.gather(*(body() for _ in range(20)))
    assert peak == 3
    assert gate.in_flight == 0


async def test_gate_counts_slots_and_lets_an_oversized_body_run_alone() -> None:
    gate = ConcurrencyGate(AdaptiveLimit(minimum=4, maximum=4))
    taken: list[int] = []
    peak = 0

    async def body(n: int) -> None:
        nonlocal peak
        async with gate.slots(n):
            taken.append(n)
            peak = max(peak, gate.in_flight)
            assert gate.in_flight <= 4 or gate.in_flight == n  # more than the limit only alone
            await asyncio.sleep(0.01)

    await asyncio.gather(*(body(n) for n in [3, 1, 2, 6, 1, 3]))
    assert sorted(taken) == [1, 1, 2, 3, 3, 6]
    assert peak == 6 and gate.in_flight == 0
