"""Worker throughput with N processes in one consumer group, each the real Pipeline and
Processor with a model that answers instantly (the worker's own cost only).

Each process is spawned fresh, as `streamproc worker --processes N` spawns its children.
Events are published only once every member holds partitions (a member joining later
would rebalance mid-run); the rate runs from the first item any member takes to the moment
every item is handled and every member has committed all it took.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from load.instant import instant_processor
from load.stack import publish_events
from load.workload import Event
from streamproc.config import KafkaSettings, Settings, TopicSettings, WorkerSettings
from streamproc.stream import InboundRecord, OutboundRecord, Pipeline

__all__ = ["worker_processes_rate"]

_TICK_SECONDS = 0.005
_START_TIMEOUT_SECONDS = 120.0


@dataclass
class _Board:
    """What the members tell the parent, one slot each (each slot has one writer)."""

    # Shared ctypes arrays without locks (typeshed has no precise type for them).
    handled: Any
    uncommitted: Any
    first: Any  # perf_counter of the first item (one clock per machine)
    assigned: Any  # partitions held; -1 before the first assignment
    ticks: Any  # bumped after each update: a parent sees fresh values
    stop: Any


def worker_processes_rate(
    bootstrap: str, topics: TopicSettings, events: Sequence[Event], policies_dir: Path, processes: int
) -> float:
    """Items/s of ``processes`` worker processes given ``events``."""
    context = multiprocessing.get_context("spawn")
    board = _Board(
        handled=context.Array("q", processes, lock=False),
        uncommitted=context.Array("q", processes, lock=False),
        first=context.Array("d", processes, lock=False),
        assigned=context.Array("q", [-1] * processes, lock=False),
        ticks=context.Array("q", processes, lock=False),
        stop=context.Value("b", 0, lock=False),
    )
    group = f"workers-{uuid.uuid4().hex[:8]}"
    members = [
        context.Process(
            target=_member, args=(bootstrap, topics, policies_dir, group, i, board), name=f"member-{i}"
        )
        for i in range(processes)
    ]
    for member in members:
        member.start()
    try:
        _wait_for_assignments(board, members, partitions=24)
        asyncio.run(publish_events(bootstrap, topics, list(events)))
        return len(events) / _wait_until_done(board, members, len(events))
    finally:
        board.stop.value = 1
        for member in members:
            member.join(timeout=30)
            if member.is_alive():
                member.kill()


def _wait_for_assignments(
    board: _Board, members: Sequence[multiprocessing.process.BaseProcess], partitions: int
) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    stable_since: float | None = None
    while True:
        _check(members)
        held = list(board.assigned)
        if min(held) > 0 and sum(held) == partitions:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since > 1.0:  # no rebalance under way
                return
        else:
            stable_since = None
        if time.monotonic() > deadline:
            raise click.ClickException(f"the group never settled: partitions held {held}")
        time.sleep(0.05)


def _wait_until_done(
    board: _Board, members: Sequence[multiprocessing.process.BaseProcess], count: int
) -> float:
    """Seconds from the first item taken to all handled and committed."""
    while True:
        _check(members)
        if sum(board.handled) >= count:
            ticks = list(board.ticks)
            while any(now < then + 2 for now, then in zip(board.ticks, ticks, strict=True)):
                time.sleep(_TICK_SECONDS)
            if not any(board.uncommitted):
                finished = time.perf_counter()
                return float(finished - min(t for t in board.first if t > 0))
        time.sleep(_TICK_SECONDS)


def _check(members: Sequence[multiprocessing.process.BaseProcess]) -> None:
    dead = [m.name for m in members if not m.is_alive()]
    if dead:
        raise click.ClickException(f"worker process {', '.join(dead)} died")


def _member(
    bootstrap: str, topics: TopicSettings, policies_dir: Path, group: str, index: int, board: _Board
) -> None:
    asyncio.run(_member_loop(bootstrap, topics, policies_dir, group, index, board))


async def _member_loop(
    bootstrap: str, topics: TopicSettings, policies_dir: Path, group: str, index: int, board: _Board
) -> None:
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, group_id=group, client_id=f"{group}-{index}"),
        topics=topics,
        worker=WorkerSettings(max_inflight_items=2048),
    )
    processor, metrics = instant_processor(settings, policies_dir)
    handled = 0

    async def handle(record: InboundRecord) -> list[OutboundRecord]:
        nonlocal handled
        if not handled:
            board.first[index] = time.perf_counter()
        handled += 1
        board.handled[index] = handled
        return await processor.process(record)

    pipeline = Pipeline(
        settings.kafka, settings.worker, handle, metrics, topics=[topics.listings, topics.videos]
    )
    running = asyncio.create_task(pipeline.run())
    try:
        while not board.stop.value:
            if running.done():
                await running  # raises what stopped it
            board.uncommitted[index] = pipeline.uncommitted
            if not pipeline.readiness():
                board.assigned[index] = len(pipeline._consumer.assignment())
            board.ticks[index] += 1
            await asyncio.sleep(_TICK_SECONDS)
    finally:
        pipeline.stop()
        await running
