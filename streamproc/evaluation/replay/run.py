"""Candidate packs over recorded traffic, through the worker's decision path, resumable.

Records are read in offset order per partition; at most ``concurrency`` items are decided at
once (a replay shares the model servers with the live workers and must not starve them), and
reading waits while that many are in flight. A record's result lines are appended when it is
done; the checkpoint moves each partition's position past a contiguous prefix of done records
(the worker's commit rule), after the lines before it are on disk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import orjson

from streamproc.decision import Evaluation, ModelClient, evaluate_item, flagged_categories
from streamproc.errors import DecodeError
from streamproc.evaluation.replay.records import BadRecord, Position, Progress, ReplayedItem, ReplayPlan
from streamproc.evaluation.replay.store import ResultLog, load_progress, load_results, save_progress
from streamproc.policy import Policy
from streamproc.policy.rules import CompiledRules
from streamproc.schemas import ContentEvent, decode_event
from streamproc.stream.offsets import PartitionOffsets
from streamproc.stream.time_range import RangeSource, TimedRecord

__all__ = ["CHECKPOINT_SECONDS", "ReplayProgress", "applies", "replay"]

#: How often the checkpoint moves: a crash loses at most this much work.
CHECKPOINT_SECONDS: Final = 1.0


@dataclass(frozen=True)
class ReplayProgress:
    """How far a replay is, for the progress line."""

    records_done: int
    records_total: int
    items_done: int
    #: Records left when this run started, items decided in it and its seconds so far: the
    #: rate and the ETA come from this run alone.
    records_left_at_start: int
    items_this_run: int
    seconds_this_run: float

    @property
    def rate(self) -> float:
        """Items per second in this run."""
        return self.items_this_run / self.seconds_this_run if self.seconds_this_run > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at this run's record rate; None before it has one."""
        left = self.records_total - self.records_done
        done_now = self.records_left_at_start - left
        if done_now <= 0 or self.seconds_this_run <= 0:
            return None
        return left * self.seconds_this_run / done_now


def applies(policy: Policy, event: ContentEvent) -> bool:
    """Whether a candidate pack decides the item: its content type and, for a pack with
    verticals, the first element of the item's category path among them."""
    if policy.content_type != event.content_type:
        return False
    if not policy.verticals:
        return True
    path = getattr(event, "category_path", None) or []
    return bool(path) and path[0].casefold() in {v.casefold() for v in policy.verticals}


async def replay(
    plan: ReplayPlan,
    policies: Sequence[Policy],
    source: RangeSource,
    model: ModelClient,
    out: Path,
    *,
    concurrency: int,
    second: ModelClient | None = None,
    on_progress: Callable[[ReplayProgress], None] | None = None,
) -> Progress:
    """Replay the plan's records not replayed yet (per ``out``'s checkpoint); return the final
    checkpoint. Inference errors become results (fail closed, as in the worker); other
    exceptions stop the replay with its progress kept."""
    run = _Run(plan, policies, model, out, second, on_progress)
    try:
        await run.read_all(source, concurrency)
    finally:
        run.checkpoint()
        run.log.close()
    progress = Progress(positions=run.positions(), busy_seconds=run.busy_seconds(), complete=True)
    save_progress(out, progress)
    return progress


class _Run:
    """One run of a replay: its ledger of offsets, its result log and its counters."""

    def __init__(
        self,
        plan: ReplayPlan,
        policies: Sequence[Policy],
        model: ModelClient,
        out: Path,
        second: ModelClient | None,
        on_progress: Callable[[ReplayProgress], None] | None,
    ) -> None:
        self.plan, self.policies, self.model, self.out, self.second = plan, policies, model, out, second
        self.rules = {p.name: CompiledRules.compile(p) for p in policies}
        self.content_types = {topic: content_type for content_type, topic in plan.topics.items()}
        previous, results = load_progress(out), load_results(out)
        self.start = {(p.topic, p.partition): p.offset for p in previous.positions}
        # Records past the checkpoint that have their lines already (reading restarts below them).
        self.done = {
            (e.topic, e.partition, e.offset)
            for e in results
            if e.offset >= self.start.get((e.topic, e.partition), 0)
        }
        self.items_before = sum(1 for e in results if isinstance(e, ReplayedItem))
        self.ledgers = {(r.topic, r.partition): PartitionOffsets() for r in plan.inputs}
        self.busy_before, self.started = previous.busy_seconds, time.monotonic()
        self.log = ResultLog(out)
        self.items = 0
        self.on_progress = on_progress
        self.left_at_start = plan.records - self._records_done()
        self.last_checkpoint = self.started

    async def read_all(self, source: RangeSource, concurrency: int) -> None:
        gate = asyncio.Semaphore(concurrency)
        async with asyncio.TaskGroup() as group:
            async for record in source.read(self.plan.inputs, self.start):
                ledger = self.ledgers[(record.topic, record.partition)]
                ledger.started(record.offset)
                if not self._wanted(record):
                    ledger.finished(record.offset)
                    continue
                await gate.acquire()
                group.create_task(self._one(record, ledger, gate))

    async def _one(self, record: TimedRecord, ledger: PartitionOffsets, gate: asyncio.Semaphore) -> None:
        try:
            entries = await self._decide(record)
        finally:
            gate.release()
        self.log.append(entries)
        ledger.finished(record.offset)
        self.items += sum(1 for e in entries if isinstance(e, ReplayedItem))
        if time.monotonic() - self.last_checkpoint >= CHECKPOINT_SECONDS:
            self.checkpoint()

    def _wanted(self, record: TimedRecord) -> bool:
        in_range = self.plan.from_ms <= record.timestamp_ms < self.plan.to_ms
        return in_range and (record.topic, record.partition, record.offset) not in self.done

    async def _decide(self, record: TimedRecord) -> list[ReplayedItem | BadRecord]:
        content_type = self.content_types[record.topic]
        try:
            event = decode_event(content_type, record.value)
        except DecodeError as exc:
            bad = BadRecord(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                timestamp_ms=record.timestamp_ms,
                error=f"{exc.kind}: {exc}",
            )
            return [bad]
        entries: list[ReplayedItem | BadRecord] = []
        for policy in self.policies:
            if applies(policy, event):
                result = await evaluate_item(
                    policy, self.rules[policy.name], event, self.model, second=self.second
                )
                entries.append(_item(policy, record, event, result))
        return entries

    def checkpoint(self) -> None:
        self.log.sync()  # the lines first: the positions below must never run ahead of them
        save_progress(self.out, Progress(positions=self.positions(), busy_seconds=self.busy_seconds()))
        self.last_checkpoint = time.monotonic()
        if self.on_progress is not None:
            self.on_progress(
                ReplayProgress(
                    records_done=self._records_done(),
                    records_total=self.plan.records,
                    items_done=self.items_before + self.items,
                    records_left_at_start=self.left_at_start,
                    items_this_run=self.items,
                    seconds_this_run=time.monotonic() - self.started,
                )
            )

    def positions(self) -> tuple[Position, ...]:
        found = []
        for r in self.plan.inputs:
            ledger = self.ledgers[(r.topic, r.partition)]
            start = max(self.start.get((r.topic, r.partition), r.start), r.start)
            offset = ledger.position if ledger.position is not None else start
            found.append(Position(topic=r.topic, partition=r.partition, offset=offset))
        return tuple(found)

    def busy_seconds(self) -> float:
        return self.busy_before + time.monotonic() - self.started

    def _records_done(self) -> int:
        return sum(p.offset - r.start for p, r in zip(self.positions(), self.plan.inputs, strict=True))


def _item(policy: Policy, record: TimedRecord, event: ContentEvent, result: Evaluation) -> ReplayedItem:
    outcome, answers = result.outcome, result.answers
    stage: Literal["pre", "post"] | None = None
    if outcome.decided_by.kind == "rule":
        stage = next((r.stage for r in policy.rules if r.id == outcome.decided_by.id), None)
    scored = bool(result.scores) and outcome.decided_by.kind != "error"
    return ReplayedItem(
        pack=policy.name,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp_ms,
        content_type=event.content_type,
        content_id=event.content_id,
        revision=event.revision,
        decision=outcome.decision,
        decided_by=outcome.decided_by,
        reason_code=outcome.reason_code,
        rule_stage=stage,
        flagged=tuple(flagged_categories(policy, outcome, result.scores)),
        scores=dict(result.scores),
        clipped=result.clipped,
        requests=len(answers),
        prompt_tokens=sum(a.prompt_tokens for a in answers),
        completion_tokens=sum(a.completion_tokens for a in answers),
        second_model_requests=result.second_requests,
        event=orjson.loads(record.value or b"{}") if scored else None,
    )
