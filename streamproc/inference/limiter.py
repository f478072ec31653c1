"""How many requests to keep in flight: a limit that follows the model server's latency.

A continuous-batching server gets more throughput from more concurrent requests until it
saturates; past that point extra requests only queue and latency grows. ``AdaptiveLimit``
follows the gradient algorithm of Netflix's concurrency-limits: it compares a short-term
average of request latency with a long-term one, shrinks the limit when the short-term
latency exceeds ``tolerance`` times the long-term one (requests are queueing), and grows it
by about √limit per sample otherwise. ``ConcurrencyGate`` holds requests back while the
limit is reached.
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType

__all__ = ["AdaptiveLimit", "ConcurrencyGate"]


class AdaptiveLimit:
    """A concurrency limit in ``[minimum, maximum]`` adjusted by each latency sample."""

    def __init__(
        self,
        *,
        initial: int,
        minimum: int,
        maximum: int,
        tolerance: float = 2.0,
        smoothing: float = 0.2,
        short_window: int = 10,
        long_window: int = 500,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError(f"need 1 <= minimum <= maximum, got {minimum} and {maximum}")
        self.minimum, self.maximum = minimum, maximum
        self._limit = float(min(max(initial, minimum), maximum))
        self._tolerance = tolerance
        self._smoothing = smoothing
        self._short_alpha = 2.0 / (short_window + 1)
        self._long_alpha = 2.0 / (long_window + 1)
        self._short: float | None = None
        self._long: float | None = None

    @property
    def current(self) -> int:
        return int(self._limit)

    def sample(self, seconds: float, in_flight: int) -> int:
        """Account one finished request that took ``seconds`` with ``in_flight`` running."""
        if self._short is None or self._long is None:
            self._short = self._long = seconds
            return self.current
        self._short += self._short_alpha * (seconds - self._short)
        self._long += self._long_alpha * (seconds - self._long)
        # After a long period of high latency, let the baseline come down quickly.
        if self._long > 2 * self._short:
            self._long *= 0.95
        gradient = max(0.5, min(1.0, self._tolerance * self._long / self._short))
        target = self._limit * gradient + math.sqrt(self._limit)
        if in_flight < self._limit / 2:
            # Not using the limit we have: latency says nothing about a bigger one.
            target = min(target, self._limit)
        limit = (1 - self._smoothing) * self._limit + self._smoothing * target
        self._limit = min(max(limit, float(self.minimum)), float(self.maximum))
        return self.current


class ConcurrencyGate:
    """``async with gate:`` runs at most ``limit.current`` bodies at once."""

    def __init__(self, limit: AdaptiveLimit) -> None:
        self.limit = limit
        self.in_flight = 0
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.limit.current)
            self.in_flight += 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async with self._changed:
            self.in_flight -= 1
            self._changed.notify(max(1, self.limit.current - self.in_flight))
