"""The hot path: Kafka records in, a bounded window of items in flight, outputs out, safe commits.

Built on aiokafka directly (faust's agent loop measured about 20x slower on this path and
acks batches rather than items; see load/RESULTS.md):

- **Window.** Up to ``worker.max_inflight_items`` records are taken and not yet committed,
  across partitions, so the model server always has work to batch, and a crash repeats
  at most that many. Items with the same key in one partition (revisions of one listing)
  run one after another, in offset order.
- **Safe commits.** An item is finished when the broker has acknowledged all its outputs.
  Every ``commit_interval_seconds`` (sooner when half the window waits for a commit, or
  when a poll finds nothing new) each partition's commit moves to the end of its
  contiguous prefix of finished offsets, never past an unfinished one.
- **Backpressure.** When the window stays full for a poll interval (pausing drops what
  aiokafka prefetched, so a full window first waits for the commit that frees it), or
  ``ready`` says no (in hold mode, while the model server's circuit is open), every
  assigned partition is paused. The consumer keeps polling while paused, so slow model
  calls never starve heartbeats or poll deadlines into a rebalance.
- **Outputs too large.** The broker's size refusals are not retried: the item's dead letter
  (without its payload) is published instead and the partition moves on; if even that is
  refused, the partition is held, never committed past the item, and ``readiness`` says so.
- **Rebalance and shutdown.** Revoked partitions get ``drain_timeout_seconds`` to finish
  their items; finished offsets are committed and the rest is abandoned, so the next
  owner processes it again (at least once; verdicts carry an idempotency key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from streamproc.config import KafkaSettings, WorkerSettings
from streamproc.kafka_security import client_options
from streamproc.metrics import PipelineRecorder
from streamproc.stream.lag import LagTracker
from streamproc.stream.offsets import OffsetLedger
from streamproc.stream.publish import Unpublishable, publish
from streamproc.stream.records import Handler, InboundRecord, Replacement

__all__ = ["FETCH_WAIT_MS", "Handler", "Pipeline", "PipelineFailed", "publish"]

log = logging.getLogger(__name__)

#: Consumption resumes once the window has drained to this share of its size.
_RESUME_AT = 0.75
_POLL_TIMEOUT_MS = 100
#: Longest a fetch waits for data. Kafka answers as soon as data arrives; some compatible
#: brokers (Tansu) wait out the whole interval, which then adds to every item's latency.
FETCH_WAIT_MS = 20
#: Bigger than aiokafka's 16 KiB default: a full batch makes sends wait for the broker.
_PRODUCE_BATCH_BYTES = 512 * 1024
#: Why ``ready`` is False: the worker only says so in hold mode, while the circuit is open.
_MODEL_HOLD = "model server circuit open, items held until it answers"


class PipelineFailed(RuntimeError):
    """An item failed in a way the worker cannot handle; its offset was not committed."""


class Pipeline:
    """Consume ``topics``, run ``handler`` on every record, produce its outputs, commit safely.

    ``ready`` False pauses consumption: the handler is holding items for the model server.
    Outputs the broker refuses for their size are replaced by ``too_large``'s records (a dead
    letter of the item, in the services) and the item is done; without it, or when those are
    refused too, the item's partition stays held and ``readiness`` says so.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        window: WorkerSettings,
        handler: Handler,
        metrics: PipelineRecorder,
        *,
        topics: Sequence[str],
        ready: Callable[[], bool] = lambda: True,
        too_large: Replacement | None = None,
    ) -> None:
        self._window = window
        self._too_large = too_large
        #: Partitions held behind an item none of whose outputs, nor their replacement, fit.
        self._stuck: dict[TopicPartition, str] = {}
        self._handler = handler
        self._metrics = metrics
        self._topics = list(topics)
        self._ready = ready
        self._ledger = OffsetLedger()
        self._tasks: dict[TopicPartition, set[asyncio.Task[None]]] = {}
        self._tails: dict[tuple[TopicPartition, bytes], asyncio.Task[None]] = {}
        self._in_flight = 0
        self._paused = False
        self._pause_reason: str | None = None
        self._consumer_started = False
        self._assignment_received = False
        self._stopping = asyncio.Event()
        self._commit_due = asyncio.Event()
        #: Set when a commit (or a revocation) frees room in the window, or on stop.
        self._room = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._failure: BaseException | None = None
        security = client_options(kafka)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=kafka.group_id,
            group_instance_id=kafka.group_instance_id,
            client_id=kafka.client_id,
            enable_auto_commit=False,
            auto_offset_reset=kafka.auto_offset_reset,
            session_timeout_ms=int(kafka.session_timeout_seconds * 1000),
            heartbeat_interval_ms=int(kafka.heartbeat_interval_seconds * 1000),
            rebalance_timeout_ms=int(kafka.rebalance_timeout_seconds * 1000),
            max_poll_records=window.fetch_max_records,
            fetch_max_wait_ms=FETCH_WAIT_MS,
            **security,
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap_servers,
            client_id=kafka.client_id,
            acks="all",
            linger_ms=window.linger_ms,
            max_batch_size=_PRODUCE_BATCH_BYTES,
            **security,
        )
        self._lag = LagTracker(self._consumer, metrics)

    @property
    def in_flight(self) -> int:
        """Items started and not finished."""
        return self._in_flight

    @property
    def uncommitted(self) -> int:
        """Records taken and not yet committed: what the window bounds."""
        return self._ledger.uncommitted

    def stop(self) -> None:
        """Stop fetching; ``run`` then drains, commits and returns."""
        self._stopping.set()
        self._room.set()

    def readiness(self) -> list[str]:
        """Why the pipeline is not consuming (empty when it is): not started, no partition
        assignment yet (an empty one counts: more members than partitions is normal), stopping.
        Reads plain flags only, so any thread may call it."""
        if self._stopping.is_set():
            return ["pipeline stopping"]
        if not self._consumer_started:
            return ["Kafka consumer not started"]
        if not self._assignment_received:
            return ["consumer group not joined yet: no partition assignment received"]
        return list(self._stuck.values())

    async def run(self) -> None:
        """Run until ``stop()``; raises PipelineFailed if an item could not be finished."""
        await self._producer.start()
        try:
            self._consumer.subscribe(self._topics, listener=_Rebalance(self))
            await self._consumer.start()
            self._consumer_started = True
            try:
                chores = [
                    asyncio.create_task(self._commit_periodically()),
                    asyncio.create_task(self._track_lag()),
                ]
                try:
                    await self._fetch()
                finally:
                    for chore in chores:
                        chore.cancel()
                    for chore in chores:
                        with contextlib.suppress(asyncio.CancelledError):
                            await chore
                    await self._release(list(self._tasks))
            finally:
                self._consumer_started = False
                await self._consumer.stop()
        finally:
            await self._producer.stop()
        if self._failure is not None:
            raise PipelineFailed(f"an item could not be finished: {self._failure!r}") from self._failure

    async def _fetch(self) -> None:
        consumer, window = self._consumer, self._window.max_inflight_items
        while not self._stopping.is_set():
            if not self._paused and self._ledger.uncommitted >= window:
                # the next commit, moments away, usually frees it: pausing would drop what
                # aiokafka prefetched for the partitions, to be fetched again on resume
                await self._wait_for_room()
            self._apply_backpressure()
            if self._paused:  # nothing can arrive: poll (keeping the consumer alive) once room is made
                await self._wait_for_room()
            room = max(1, min(self._window.fetch_max_records, window - self._ledger.uncommitted))
            wait_ms = 0 if self._paused else _POLL_TIMEOUT_MS
            batches = await consumer.getmany(timeout_ms=wait_ms, max_records=room)
            if not batches and self._ledger.uncommitted > self._in_flight:
                self._commit_due.set()  # idle: commit what finished now, not at the next interval
            for tp, records in batches.items():
                if tp in consumer.assignment():
                    for record in records:
                        self._start(tp, record)
            await asyncio.sleep(0)  # let the new items start before polling again

    async def _wait_for_room(self) -> None:
        """Until the next commit frees room in the window, or one poll interval."""
        self._room.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_POLL_TIMEOUT_MS / 1000):
                await self._room.wait()

    def _apply_backpressure(self) -> None:
        window, taken = self._window.max_inflight_items, self._ledger.uncommitted
        reason: str | None = None
        if not self._ready():
            reason = _MODEL_HOLD
        elif taken >= window or (self._paused and taken > window * _RESUME_AT):
            reason = "window full"
        if reason is not None:  # partitions assigned since the pause must pause too
            self._consumer.pause(*self._consumer.assignment())
        if reason == self._pause_reason:
            return
        if reason is not None:
            verb = "consumption still paused" if self._paused else "pausing consumption"
            log.info("%s: %s (%d of %d records uncommitted)", verb, reason, taken, window)
        else:
            self._consumer.resume(*self._consumer.assignment())
            log.info("resuming consumption: %s (%d records uncommitted)", _resumed(self._pause_reason), taken)
        self._pause_reason = reason
        if self._paused != (reason is not None):
            self._paused = reason is not None
            self._metrics.consumption_paused(self._paused)

    def _start(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        self._ledger.started(tp, record.offset)
        inbound = InboundRecord(record.topic, record.partition, record.offset, record.key, record.value)
        key = record.key
        previous = self._tails.get((tp, key)) if key is not None else None
        task = asyncio.create_task(self._run_item(tp, inbound, previous))
        self._tasks.setdefault(tp, set()).add(task)
        if key is not None:
            self._tails[(tp, key)] = task
        self._in_flight += 1
        self._metrics.items_in_flight(self._in_flight)
        task.add_done_callback(lambda done: self._finished(tp, key, done))

    async def _run_item(
        self, tp: TopicPartition, record: InboundRecord, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])  # same key: keep offset order
        outputs = await self._handler(record)
        try:
            await publish(self._producer, outputs)
        except Unpublishable as exc:
            await self._publish_instead(tp, record, exc)
        self._ledger.finished(tp, record.offset)

    async def _publish_instead(
        self, tp: TopicPartition, record: InboundRecord, refused: Unpublishable
    ) -> None:
        """Publish ``too_large``'s records for outputs the broker refused for their size; hold the
        partition (never committing past the item, so nothing is lost) when there are none or
        they are refused too."""
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        log.error(
            "%s: the broker refused %d outputs for their size: %s", where, len(refused.records), refused.error
        )
        if self._too_large is not None:
            try:
                await publish(self._producer, self._too_large(record, refused.records, refused.error))
            except Unpublishable as again:
                refused = again
            else:
                return
        self._stuck[tp] = (
            f"partition {tp.topic}[{tp.partition}] held at offset {record.offset}: an output the "
            f"broker refuses for its size ({refused.error})"
        )
        log.critical("%s", self._stuck[tp])
        await asyncio.Event().wait()  # until the partition is revoked or the worker stops

    def _finished(self, tp: TopicPartition, key: bytes | None, task: asyncio.Task[None]) -> None:
        tasks = self._tasks.get(tp)
        if tasks is not None:
            tasks.discard(task)
        if key is not None and self._tails.get((tp, key)) is task:
            del self._tails[(tp, key)]
        self._in_flight -= 1
        self._metrics.items_in_flight(self._in_flight)
        if self._ledger.uncommitted - self._in_flight >= self._window.max_inflight_items // 2:
            self._commit_due.set()
        if not task.cancelled() and (error := task.exception()) is not None and self._failure is None:
            log.critical("stopping: an item failed and will be redelivered", exc_info=error)
            self._failure = error
            self._stopping.set()

    async def _commit_periodically(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._window.commit_interval_seconds):
                    await self._commit_due.wait()
            self._commit_due.clear()
            await self._commit()

    async def _track_lag(self) -> None:
        while True:
            await asyncio.sleep(self._window.commit_interval_seconds)
            try:
                await self._lag.refresh()
            except Exception as exc:  # noqa: BLE001 - a figure must never stop consumption
                log.warning("consumer lag not updated: %r", exc)

    async def _commit(self, tps: Iterable[TopicPartition] | None = None) -> None:
        async with self._commit_lock:
            offsets = self._ledger.to_commit(tps)
            if not offsets:
                return
            try:
                await self._consumer.commit(offsets)
            except KafkaError as exc:
                # The offsets stay due: the next commit retries them, or the next owner
                # of a lost partition reprocesses the items.
                self._metrics.offset_commit(ok=False)
                log.warning("offset commit failed: %r", exc)
                return
            self._ledger.committed(offsets)
            self._metrics.offset_commit(ok=True)
            self._room.set()

    async def _release(self, tps: Sequence[TopicPartition]) -> None:
        """Give items of ``tps`` time to finish, commit what finished, abandon the rest."""
        tasks = [task for tp in tps for task in self._tasks.get(tp, ())]
        pending: set[asyncio.Task[None]] = set()
        if tasks:
            log.info("draining %d items of %d partitions", len(tasks), len(tps))
            _, pending = await asyncio.wait(tasks, timeout=self._window.drain_timeout_seconds)
        await self._commit(tps)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("abandoned %d unfinished items; the next owner processes them again", len(pending))
            await asyncio.wait(pending)
        self._ledger.forget(tps)
        self._room.set()
        for tp in tps:
            self._tasks.pop(tp, None)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = list(revoked)
        if revoked:
            self._pipeline._metrics.rebalance("revoked")
            await self._pipeline._release(revoked)
            self._pipeline._lag.forget(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = sorted(assigned)
        self._pipeline._assignment_received = True
        self._pipeline._metrics.rebalance("assigned")
        names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in assigned)
        log.info("assigned %d partitions: %s", len(assigned), names)


def _resumed(reason: str | None) -> str:
    return "model server circuit no longer open" if reason == _MODEL_HOLD else "window drained"
