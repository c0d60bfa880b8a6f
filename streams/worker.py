"""A worker process: consumes dispatched work, runs the executor, reports the result.

Offsets are committed only after the result event is acknowledged by the broker, so a
worker killed mid-task loses nothing: the record is redelivered to the partition's next
owner (at-least-once; the fold ignores a second completion of the same task).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.executors.config import Executors
from agents.types import DepContext, WorkItem
from devline.errors import DecodeError, ExecutorError
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.checking import Checker, metric_points, qa_failure
from streams.claims import resolve_item
from streams.emit import dead_letter_headers, now_ms, stored_by_reference
from streams.lifecycle import at_stop, shut, started
from streams.offsets import OffsetBook, RebalanceListener, commit_finished
from streams.outbox import Outbox
from streams.results import Results
from streams.staleness import StalenessProbe

log = logging.getLogger("devline.worker")
LOOP_STOP_S = 2.0  # for the fetch loop to notice a stop before it is cancelled

METADATA_AGE_MS = 5000   # see new topics and partitions within seconds, not aiokafka's 5 min
SEEN_REMEMBERED = 50_000  # dispatch ids this worker took (a resent copy is dropped)
DISPATCHABLE = frozenset({"idle", "busy"})  # states in which the dispatcher sends work here
FRESH_MS = 5000          # an item for us younger than this needs no check against the log


def work_item(record: dict[str, Any]) -> WorkItem:
    return WorkItem(
        plan_id=record["plan_id"], task_id=record["task_id"], path=record["path"],
        description=record.get("description") or "", language=record.get("language"),
        content=record.get("content"), executor=record["executor"], attempt=record["attempt"],
        kind=record["kind"], priority=record["priority"], cache_key=record["cache_key"],
        dispatch_id=record["dispatch_id"], simulate=dict(record.get("simulate") or {}),
        context=tuple(DepContext(c["path"], c["content_hash"], c.get("content"),
                                 c.get("interface")) for c in record.get("context") or []),
        options=dict(record.get("options") or {}), project=record.get("project"),
    )


def beat_now(before: str, after: str) -> bool:
    """Whether a change of state needs a heartbeat at once, not at the next periodic one:
    when it changes whether the dispatcher may send work here (starting -> idle, busy ->
    draining). busy <-> idle does not: the dispatcher counts a worker's free slots from
    its own dispatches and the results in the log, and the periodic heartbeat reports what
    runs (a heartbeat per task start and finish was 1.5 records per task, each read and
    decoded by every processor)."""
    return (before in DISPATCHABLE) != (after in DISPATCHABLE)


class Worker:
    """One worker process with `slots` concurrent tasks."""

    def __init__(self, settings: Settings, *, worker_id: str | None = None,
                 slots: int | None = None, heartbeat_s: float = 1.0,
                 grace_s: float = 30.0) -> None:
        self.settings = settings
        # One id per process: a restarted worker is a new incarnation, so items sent to the
        # old one are recognised as someone else's (and checked before they run).
        self.worker_id = (f"{worker_id}.{os.getpid()}" if worker_id else
                          f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}")
        # A stable id is a slot: the group knows it as a static member, so a restarted
        # worker takes its partitions back at once (no session timeout, no rebalance).
        self.slot = worker_id
        self.slots = slots or settings.worker_slots
        self.heartbeat_s = heartbeat_s
        self.grace_s = grace_s
        self.revoke_wait_s = 2.0
        self.offsets = OffsetBook()
        self.codec = Codec.from_settings(settings)
        self.partitions: list[int] = []
        self.running: dict[asyncio.Task[None], tuple[TopicPartition, int, str]] = {}
        self.state = "starting"
        self.stopping = asyncio.Event()
        self.executors = Executors.from_file(settings.executor_config)
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.completed = 0
        self.skipped = 0
        self.seen: OrderedDict[str, None] = OrderedDict()  # dispatch ids taken (duplicates)
        self._committing: asyncio.Task[None] | None = None
        self._commit_again = False
        self.probe = StalenessProbe(settings, self.codec, self.worker_id, self.slot)
        outbox = Outbox(settings.data_dir / "outbox" / self.slot) if self.slot else None
        self.store = settings.artifact_store()
        self.results = Results(settings, self.codec, self.worker_id, self.store, outbox)
        self.checker = Checker(settings, self.store)

    # -- lifecycle ------------------------------------------------------------------
    async def run(self) -> None:
        s = self.settings
        self.producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, linger_ms=0, acks="all",
                                         enable_idempotence=True,
                                         max_request_size=s.max_message_bytes,
                                         metadata_max_age_ms=METADATA_AGE_MS,
                                         **s.kafka_common())
        await started(self.producer)
        # Made once the producer runs: a failed start leaves no client unclosed.
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap, group_id=s.group("devline-workers"),
            enable_auto_commit=False, auto_offset_reset="earliest", group_instance_id=self.slot,
            max_poll_interval_ms=3_600_000, session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000, fetch_max_wait_ms=100,
            metadata_max_age_ms=METADATA_AGE_MS,
            max_partition_fetch_bytes=s.max_message_bytes, **s.kafka_common())
        try:  # neither client is left open when the other, or the resend, fails
            self.results.producer = self.producer
            for dispatch_id in await self.results.resend_pending():
                self.seen[dispatch_id] = None  # its redelivered item is not run again
            await started(self.consumer)
        except BaseException:
            await shut(self.producer)
            raise
        await self._wait_for_topic(s.topic(T.WORK_DEV))
        self.consumer.subscribe([s.topic(T.WORK_DEV)], listener=RebalanceListener(self))
        beat = asyncio.create_task(self._beat_loop())
        try:
            await self._loop_until_stopped()
        finally:
            await self._drain()
            beat.cancel()
            self.state = "stopped"
            await at_stop(self.heartbeat(), "the stopped heartbeat", log)
            await self.probe.stop()
            await shut(self.consumer)
            await shut(self.producer)
            log.info("worker %s stopped after %d tasks (%d stale or duplicate items skipped)",
                     self.worker_id, self.completed, self.skipped)

    async def _wait_for_topic(self, topic: str) -> None:
        """Join only once the broker knows the work topic: a consumer that subscribes
        before would own no partitions until its next metadata refresh."""
        assert self.consumer is not None
        waited = 0.0
        while not self.consumer.partitions_for_topic(topic):
            with contextlib.suppress(Exception):
                await self.consumer._client.force_metadata_update()
            if self.consumer.partitions_for_topic(topic) or self.stopping.is_set():
                break
            if waited in (5.0, 30.0):
                log.warning("worker %s: topic %s not known to the broker yet; waiting",
                            self.worker_id, topic)
            await asyncio.sleep(0.5)
            waited += 0.5

    def stop(self) -> None:
        """Stop taking work; in-flight tasks finish (or are handed back after the grace)."""
        self.state = "draining"
        self.stopping.set()

    async def _loop_until_stopped(self) -> None:
        """The loop, until it ends or `stop()` was called. It sees `stopping` at its next
        turn, but with the broker gone a fetch waits for a group assignment that never
        comes: then it is cancelled (what it fetched and did not start is not committed,
        so it is delivered again)."""
        loop = asyncio.create_task(self._loop())
        stopping = asyncio.create_task(self.stopping.wait())
        try:
            await asyncio.wait({loop, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not loop.done():
                await asyncio.wait({loop}, timeout=LOOP_STOP_S)
            if not loop.done():
                log.warning("worker %s: no fetch returned within %.0fs of the stop (broker "
                            "unreachable?); stopping without it", self.worker_id, LOOP_STOP_S)
                loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop
            else:
                loop.result()  # the loop's own failure, if it failed
        finally:
            stopping.cancel()
            if not loop.done():  # we are being cancelled
                loop.cancel()

    async def _loop(self) -> None:
        assert self.consumer is not None
        while not self.stopping.is_set():
            free = self.slots - len(self.running)
            if free <= 0:
                await asyncio.wait(list(self.running), timeout=0.5,
                                   return_when=asyncio.FIRST_COMPLETED)
                continue
            if self.state != "draining":
                await self._set_state("idle" if not self.running else "busy")
            if not self.offsets.fetched:
                # No max_records cap: a partially drained fetch makes aiokafka leave that
                # partition out of its next long poll, delaying the next item ~fetch wait.
                batch = await self.consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    for record in records:
                        self.offsets.fetch(tp, record)
            started = False
            while free > 0 and self.offsets.fetched:
                tp, record = self.offsets.fetched.popleft()
                task = asyncio.create_task(self._handle(tp, record))
                self.running[task] = (tp, record.offset, "")
                task.add_done_callback(self._finished)
                free -= 1
                started = True
            if started:
                await self._set_state("busy")

    def _finished(self, task: asyncio.Task[None]) -> None:
        tp, offset, name = self.running.pop(task)
        if task.cancelled():
            return  # handed back: not committed, redelivered to the next owner
        if task.exception() is not None:
            # The result never reached the broker (e.g. a produce timeout): leave the
            # offset uncommitted so the work is redelivered rather than lost.
            log.error("task %s at %s@%d could not report its result: %r", name or "?", tp,
                      offset, task.exception())
            return
        self.offsets.finished(tp, offset)
        if self._committing is None or self._committing.done():
            self._committing = asyncio.get_running_loop().create_task(self._commit_soon())
        else:  # one commit request at a time: tasks finishing meanwhile share the next
            self._commit_again = True

    async def _commit_soon(self) -> None:
        self._commit_again = True
        while self._commit_again:
            self._commit_again = False
            await self.commit()

    async def commit(self) -> None:
        """Commit, per partition, past the longest run of finished offsets."""
        assert self.consumer is not None
        await commit_finished(self.consumer, self.offsets, "records")
        if not self.running and self.state == "busy":
            await self._set_state("idle")

    async def _drain(self) -> None:
        if self.running:
            log.info("worker %s draining %d task(s) (grace %.0fs)", self.worker_id,
                     len(self.running), self.grace_s)
            await self.heartbeat()
            _, late = await asyncio.wait(list(self.running), timeout=self.grace_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        await at_stop(self.commit(), "committing the finished work items", log)

    async def _set_state(self, state: str) -> None:
        """Change state; heartbeat at once if that is news the dispatcher needs now."""
        before, self.state = self.state, state
        if beat_now(before, state):
            await self.heartbeat()

    async def heartbeat(self) -> None:
        if self.producer is None:
            return
        record = {"worker_id": self.worker_id, "host": socket.gethostname(), "pid": os.getpid(),
                  "state": self.state, "capacity": self.slots,
                  "running": sorted(r[2] for r in self.running.values() if r[2]),
                  "partitions": self.partitions, "at": now_ms()}
        await self.producer.send(self.settings.topic(T.WORKERS), key=self.worker_id.encode(),
                                 value=self.codec.encode("WorkerHeartbeat", record),
                                 headers=[("event-type", b"WorkerHeartbeat")])

    async def _beat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            with contextlib.suppress(Exception):
                await self.heartbeat()

    # -- one task --------------------------------------------------------------------
    async def _handle(self, tp: TopicPartition, record: Any) -> None:
        assert self.producer is not None
        try:
            event_type, raw = self.codec.decode(record.value or b"")
            if event_type != "WorkItem":
                raise DecodeError(f"expected WorkItem, got {event_type}")
        except DecodeError as exc:
            log.warning("dead-lettering %s[%s]@%s: undecodable work item: %s", tp.topic,
                        tp.partition, record.offset, exc)
            # Like the processor's: a big record goes by reference (stored, then its head sent).
            headers = dead_letter_headers(f"undecodable work item: {exc}", topic=tp.topic,
                                          partition=tp.partition, offset=record.offset)
            letter = await stored_by_reference(self.store, record.value, record.key, headers)
            await self.producer.send_and_wait(self.settings.topic(T.DLQ), key=letter.key,
                                              value=letter.value, headers=letter.headers)
            return
        item = work_item(raw)
        why = await self._stale(raw)
        if why is not None:
            self.skipped += 1
            log.info("task %s/%s: skipping work item %s (%s)", item.plan_id, item.task_id,
                     item.dispatch_id, why)
            return  # committed like a finished item: it is someone else's, or done
        self.seen[item.dispatch_id] = None
        while len(self.seen) > SEEN_REMEMBERED:
            self.seen.popitem(last=False)
        task = asyncio.current_task()
        if task in self.running:
            self.running[task] = (tp, record.offset, f"{item.plan_id}/{item.task_id}")
        started = now_ms()
        sandbox = Path(tempfile.mkdtemp(prefix="devline-task-"))
        try:
            item = await resolve_item(item, raw.get("brief"), self.store)
            item = await self.checker.fix_context(item, raw)
            result = await self.executors.run(item, sandbox, self.settings.executor_timeout)
            checked = await self.checker.verdict(item, raw, result.content)
        except ExecutorError as exc:
            log.info("task %s/%s attempt %d failed (%s): %s", item.plan_id, item.task_id,
                     item.attempt, exc.error_type, exc)
            await self.results.failed(item, started, exc)
        else:
            if checked is not None:
                await self.results.metrics(metric_points(checked[0]))
            if checked is not None and not checked[0].passed:
                failure = qa_failure(checked[0])
                log.info("task %s/%s attempt %d: %s failed its checks: %s", item.plan_id,
                         item.task_id, item.attempt, item.path, failure)
                await self.results.qa_failed(item, started, result, failure, checked[1])
            else:
                await self.results.completed(item, started, result,
                                             checked[1] if checked else None)
            self.completed += 1
        finally:
            shutil.rmtree(sandbox, ignore_errors=True)

    async def _stale(self, raw: dict[str, Any]) -> str | None:
        """Why this item must not run here (a duplicate, superseded, done or running
        elsewhere), or None. Only items that may be stale are checked against the log."""
        if raw["dispatch_id"] in self.seen:
            return "a duplicate of an item this worker already took"
        ours = raw.get("worker_id") == self.worker_id
        fresh = now_ms() - int(raw.get("dispatched_at") or 0) < FRESH_MS
        if ours and fresh:
            return None
        pause = 0.2
        while True:
            try:
                return await self.probe.reason(raw)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker is away: nothing can be reported anyway
                log.warning("cannot check work item %s against the log (%s); retrying",
                            raw["dispatch_id"], exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)


async def run_worker(settings: Settings, **kwargs: Any) -> None:
    """Run one worker until SIGTERM/SIGINT, then drain and exit."""
    import signal

    worker = Worker(settings, **kwargs)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    log.info("worker %s starting (%d slot(s))", worker.worker_id, worker.slots)
    started = time.monotonic()
    await worker.run()
    log.info("worker %s ran %.1fs", worker.worker_id, time.monotonic() - started)
