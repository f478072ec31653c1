"""The baseline: a plain HTTP client sending the worker's own model requests straight to vLLM."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence

import httpx
import orjson

from load.report import RunReport
from load.workload import arrival_offsets
from streamproc.inference.protocol import ModelRequest

__all__ = ["closed_loop", "open_loop_direct"]


def _client(base_url: str, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/") + "/",
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(600.0),
        headers={"content-type": "application/json"},
    )


async def _send(http: httpx.AsyncClient, model: str, request: ModelRequest) -> httpx.Response:
    response = await http.post(request.endpoint, content=orjson.dumps({"model": model, **request.body}))
    response.raise_for_status()
    return response


async def closed_loop(
    base_url: str,
    model: str,
    requests: Sequence[ModelRequest],
    concurrency: int,
    *,
    prompt_tokens: list[int] | None = None,
) -> float:
    """Requests/s with ``concurrency`` requests always in flight; each answer's prompt tokens
    (the server's ``usage``) are appended to ``prompt_tokens`` when given."""
    pending = iter(requests)
    async with _client(base_url, concurrency) as http:

        async def lane() -> None:
            for request in pending:  # lanes share one iterator
                response = await _send(http, model, request)
                if prompt_tokens is not None:
                    prompt_tokens.append(int(orjson.loads(response.content)["usage"]["prompt_tokens"]))

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        return len(requests) / (time.perf_counter() - started)


async def open_loop_direct(
    base_url: str,
    model: str,
    items: Sequence[Sequence[ModelRequest]],
    rate: float,
    *,
    seed: int,
    name: str,
) -> RunReport:
    """Poisson arrivals of items at ``rate``/s; each item's requests are sent at once, as the
    worker sends them, and its latency runs from the scheduled send time to its last answer."""
    offsets = arrival_offsets(len(items), rate, random.Random(seed))  # noqa: S311
    samples: list[tuple[float, float]] = []
    async with _client(base_url, 1024) as http:
        started = time.perf_counter()

        async def one(requests: Sequence[ModelRequest], offset: float) -> None:
            await asyncio.sleep(max(0.0, started + offset - time.perf_counter()))
            await asyncio.gather(*(_send(http, model, request) for request in requests))
            samples.append((offset, time.perf_counter() - started - offset))

        await asyncio.gather(*(one(r, o) for r, o in zip(items, offsets, strict=True)))
    return RunReport.of(name, rate, offsets, len(items), samples)
