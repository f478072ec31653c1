"""How many requests to keep in flight: a limit that follows the model server's latency.

A continuous-batching server gets more throughput from more concurrent requests until it
saturates; past that point extra requests only wait in its queue, latency grows, and
requests that outlive their timeout waste the work already done on them.

``AdaptiveLimit`` starts at its minimum and compares the recent latency (a short moving
average) with the no-load latency (the lowest recent average seen). While the recent
latency stays within ``tolerance`` times the no-load one, the limit grows by 1/√limit per
answer (about √limit per round of requests); above it, requests are queueing and the
limit shrinks by 2 % per answer. When the limit is at its minimum and latency is still
high, the prompts or the server got slower: that latency becomes the new no-load one.
``ConcurrencyGate`` holds requests back while the limit is reached; it counts prompts, so a
request that carries several prompts takes as many slots (it is as much work for the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator

__all__ = ["AdaptiveLimit", "ConcurrencyGate"]

_DECREASE = 0.98


class AdaptiveLimit:
    """A concurrency limit in ``[minimum, maximum]`` adjusted by each latency sample."""

    def __init__(self, *, minimum: int, maximum: int, tolerance: float = 2.0, short_window: int = 10) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError(f"need 1 <= minimum <= maximum, got {minimum} and {maximum}")
        self.minimum, self.maximum = minimum, maximum
        self._limit = float(minimum)
        self._tolerance = tolerance
        self._alpha = 2.0 / (short_window + 1)
        self._recent: float | None = None
        self._no_load: float | None = None

    @property
    def current(self) -> int:
        return int(self._limit)

    def sample(self, seconds: float, in_flight: int) -> int:
        """Account one finished request that took ``seconds`` with ``in_flight`` running."""
        if self._recent is None or self._no_load is None:
            self._recent = self._no_load = seconds
            return self.current
        self._recent += self._alpha * (seconds - self._recent)
        self._no_load = min(self._no_load, self._recent)
        limit = self._limit
        if self._recent > self._tolerance * self._no_load:
            if limit <= self.minimum:
                self._no_load = self._recent
            limit *= _DECREASE
        elif in_flight >= limit / 2:  # a limit we do not use says nothing about a bigger one
            limit += 1 / math.sqrt(limit)
        self._limit = min(max(limit, float(self.minimum)), float(self.maximum))
        return self.current


class ConcurrencyGate:
    """``async with gate.slots(n):`` runs bodies while at most ``limit.current`` slots are
    taken; a body needing more than the whole limit runs alone rather than never."""

    def __init__(self, limit: AdaptiveLimit) -> None:
        self.limit = limit
        self.in_flight = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def slots(self, n: int = 1) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(
                lambda: self.in_flight == 0 or self.in_flight + n <= self.limit.current
            )
            self.in_flight += n
        try:
            yield
        finally:
            async with self._changed:
                self.in_flight -= n
                self._changed.notify(max(1, self.limit.current - self.in_flight))
