"""The stream processor's edge: a record in, the fold applied, its commands carried out.

    record ─▶ decode + validate ──bad──▶ DLQ (the only way a record gets there)
                 │
                 ▼
    fold (seq-stamped, in the tables) ─▶ commands ─▶ effects (idempotent)
                 │                                  our failure? retried in place
                 ▼
    dispatcher bookkeeping; pump (decide dispatches, log them; never blames a record)

Nothing acts on the dispatcher's memory until the processor has read its partitions up to
the end offsets seen when they were assigned (`CatchUp`): a task whose dispatch is still
in the unread part of the log must not be dispatched again. Then `recover` rebuilds the
queue, the in-flight work, the timers and undecided failures from the tables.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any

from agents.executors.config import Executors
from agents.resilience.backoff import BackoffPolicy
from agents.scheduling import fold as F
from agents.scheduling.decisions import failure_policy
from agents.scheduling.dispatch import Dispatcher
from agents.scheduling.model import Cmd
from devline.errors import DecodeError
from streams import topics as T
from streams.edge.ahead import Ahead
from streams.edge.catchup import CATCHUP_STALL_S, CatchUp
from streams.edge.dispatching import DispatchLoop
from streams.edge.effects import Effects
from streams.edge.failures import Failures
from streams.edge.integrating import Integrating
from streams.edge.leader import Leader
from streams.edge.link import BrokerLink
from streams.edge.persist import Unexpected, persist
from streams.edge.ports import Ports, RawRecord, all_delivered
from streams.edge.retention import Retention
from streams.edge.state import HeldHeaders, plan_state, save_header
from streams.edge.timers import RetryTimers
from streams.edge.validity import parse_event
from streams.edge.writes import WriteBehind
from streams.emit import dead_letter_headers, detach, headers_for
from streams.guarding import GuardEdge

log = logging.getLogger("devline.scheduler")

HEARTBEATS = frozenset({"WorkerHeartbeat"})
Parsed = tuple[RawRecord, str, dict[str, Any]]  # a record and its valid event
FIRST_EVERY = 5  # ticks (seconds) between reports of the records folded first
RECONCILE_EVERY = 10  # ticks (seconds) between checks of the dispatcher against the tables


class Processor:
    """Everything the scheduler does, on any `Ports` (Faust tables or in-memory fakes)."""

    def __init__(self, ports: Ports, *, executors: Executors | None = None,
                 policy: BackoffPolicy | None = None, lease_s: float = 20.0,
                 worker_timeout: float = 15.0, new_id: Callable[[], str] | None = None,
                 processor_id: str | None = None) -> None:
        s = ports.settings
        self.ports = ports
        self.id = processor_id or uuid.uuid4().hex[:12]
        self.broker = BrokerLink(ports, self.id)
        self.link = self.broker.clock
        self.dispatcher = Dispatcher(worker_timeout, new_id or (lambda: uuid.uuid4().hex))
        self.guard = GuardEdge(ports)
        self.executors = executors or Executors.from_file(s.executor_config)
        self.failures = Failures(ports, policy or failure_policy(s.max_attempts))
        self.timers = RetryTimers()
        self.dispatch = DispatchLoop(ports, self.executors)
        self.integrating = Integrating(ports)
        self.leader = Leader(ports, self.dispatcher, self.broker, self.guard, lease_s,
                             reject=self.reject)
        self.writes = WriteBehind()  # the artifact-store writes of a batch
        self.dispatch.writes = self.writes
        self.effects = Effects(self)
        self.catchup = CatchUp()
        self.ready = False  # caught up and recovered: may dispatch, fire timers, reclaim
        self.retention = Retention(ports)
        self.partitions: set[int] = set()
        self.ticks = 0
        self.handling = asyncio.Lock()  # held while an event's fold and effects run
        self.plans = HeldHeaders(ports.plans)  # written once per batch
        self.ahead = Ahead()  # records folded before the stream brings them
        self._first_reported = 0
        self.leader.logged = self.fold_ahead
        # Where a fold's table writes go: the changelog partition of the record's (Faust
        # takes it from the current stream event; `streams.scheduling` sets it).
        self.in_partition: Callable[[RawRecord], AbstractContextManager[Any]] = \
            lambda rec: nullcontext()
        self.settled: Callable[[], bool] = lambda: True  # False while Kafka rebalances

    # -- the event log ---------------------------------------------------------------
    async def on_event_record(self, rec: RawRecord) -> None:
        """One record of devline.events (see `on_event_records`)."""
        await self.on_event_records([rec])

    async def on_event_records(self, recs: Sequence[RawRecord]) -> None:
        """Records of devline.events read together: validated, folded in order, their
        commands carried out, and all their sends awaited once at the end (one round trip
        for the batch, not one per record; the caller commits their offsets after this
        returns). Never raises for our own failures: a failed send redoes the whole batch
        in order, as a crash would when they are read again (every step is idempotent).
        A record that is not a valid event is dead-lettered. Records this process folded
        when the broker acknowledged them (`fold_ahead`) are skipped."""
        async with self.handling:
            await self._fold_records(self.ahead.unread(recs))
            for rec in recs:
                self.catchup.seen(rec.partition, rec.offset, self.ports.clock())
            if not self.ready and self.catchup.done:
                await self.recover()

    async def _fold_records(self, recs: Sequence[RawRecord]) -> None:
        batch: list[tuple[RawRecord, str, dict[str, Any]]] = []
        for rec in recs:
            parsed = await self._validated(rec)
            if parsed is not None:
                batch.append((rec, *parsed))
        if len(batch) > 1:
            try:
                await persist(partial(self._handle_batch, batch),
                              what=f"handling {len(batch)} events", log=log,
                              sleep=self.ports.sleep)
                batch = []
            except Unexpected:  # one of them hits a bug: find it, one record at a time
                log.warning("a batch of %d events failed; handling them one by one",
                            len(batch))
        for rec, event_type, record in batch:
            await self._handle_one(rec, event_type, record)

    async def _handle_one(self, rec: RawRecord, event_type: str, record: dict[str, Any]
                          ) -> None:
        try:
            await persist(partial(self._handle_batch, [(rec, event_type, record)]),
                          what=f"handling {event_type} {rec.partition}@{rec.offset}",
                          log=log, sleep=self.ports.sleep)
        except Unexpected as exc:  # a bug, not the record's fault: keep it, go on
            await self.reject(rec, f"processing failed (a devline bug, please report "
                              f"it): {exc}")

    async def fold_ahead(self, logged: Sequence[tuple[str, dict[str, Any], Any]]) -> None:
        """Events this process logged, each with the broker's acknowledgement (its
        partition and offset): those that are the next records of a partition this
        process folds are folded now, not when read back (`streams.edge.ahead`)."""
        codec = self.ports.codec
        acked: dict[int, dict[int, Callable[[], Parsed | None]]] = {}
        for event_type, record, ack in logged:
            if ack is None:
                continue
            rec = RawRecord(ack.topic, ack.partition, ack.offset,
                            str(record["plan_id"]).encode(),
                            codec.encode(event_type, record),
                            tuple(headers_for(event_type, record)))
            acked.setdefault(ack.partition, {})[ack.offset] = partial(self._parsed, rec)
        for partition, candidates in acked.items():
            await self._fold_first(partition, candidates)

    async def fold_followed(self, partition: int, recs: Sequence[RawRecord]) -> None:
        """Records of devline.events as the dispatcher's follower read them (sooner than
        Faust's stream does): those that are the next ones of a partition this process
        folds are folded now, and skipped when the stream brings them."""
        await self._fold_first(partition, {r.offset: partial(self._parsed, r) for r in recs})

    async def _fold_first(self, partition: int,
                          candidates: Mapping[int, Callable[[], Parsed | None]]) -> None:
        """Fold the run of `candidates` (offset -> the record, parsed) that starts where
        the stream of `partition` is, up to the first that is not a valid event (the
        stream dead-letters that one)."""
        if not (self.ready and partition in self.partitions):
            return
        async with self.handling:  # the stream's records and these: one at a time
            if not (self.settled() and partition in self.partitions):
                return
            batch, run = [], []
            for offset in self.ahead.foldable(partition, candidates):
                parsed = candidates[offset]()
                if parsed is None:
                    break
                batch.append(parsed)
                run.append(offset)
            if not batch:
                return
            try:
                with self.in_partition(batch[-1][0]):
                    await persist(partial(self._handle_batch, batch, urgent=True),
                                  what=f"folding {len(batch)} events ahead", log=log,
                                  sleep=self.ports.sleep)
            except Unexpected:  # the stream brings them again: handled (or parked) then
                return
            self.ahead.done(partition, run)

    def _parsed(self, rec: RawRecord) -> Parsed | None:
        parsed = parse_event(self.ports.codec, rec)
        return None if isinstance(parsed, str) else (rec, *parsed)

    async def _handle_batch(self, batch: Sequence[tuple[RawRecord, str, dict[str, Any]]],
                            urgent: bool = False) -> None:
        """Fold `batch` and carry out its commands, all sends awaited at the end (at once,
        without the producer's linger, if `urgent`)."""
        async def fold_all() -> None:
            self.plans.holding = True
            try:
                for rec, event_type, record in batch:
                    await self.handle(event_type, record, rec.offset, rec.partition)
            finally:  # even when a step failed: the table holds what the fold did so far
                self.plans.holding = False
                self.plans.flush()
        try:  # sent and stored before the offsets are committed
            await self.writes.run(partial(all_delivered, fold_all,
                                          self.ports.emit.urge if urgent else None))
        except BaseException:
            self.dispatch.unsent()  # redone: its work items must be sent again
            raise
        self.dispatch.sent()

    async def decoded(self, rec: RawRecord, expected: frozenset[str], topic: str
                      ) -> tuple[str, dict[str, Any]] | None:
        """The record's event, if it is one of the `expected` types; else it is
        dead-lettered with the reason and None is returned."""
        try:
            event_type, record = self.ports.codec.decode(rec.value or b"")
        except DecodeError as exc:
            await self.reject(rec, f"undecodable: {exc}")
            return None
        if event_type not in expected:
            await self.reject(rec, f"unexpected event type {event_type} on {topic}")
            return None
        return event_type, record

    async def _validated(self, rec: RawRecord) -> tuple[str, dict[str, Any]] | None:
        parsed = parse_event(self.ports.codec, rec)
        if isinstance(parsed, str):
            await self.reject(rec, parsed)
            return None
        return parsed

    async def reject(self, rec: RawRecord, reason: str) -> None:
        """A record that is not a valid event: to the DLQ with the reason (sent until the
        broker has it: a poison record is never simply dropped)."""
        log.warning("dead-lettering %s[%s]@%s: %s", rec.topic, rec.partition, rec.offset,
                    reason)
        headers = dead_letter_headers(reason, topic=rec.topic, partition=rec.partition,
                                      offset=rec.offset)

        await persist(partial(self.ports.publish_dead_letter, rec.value, rec.key, headers),
                      what="dead-lettering a record", log=log, sleep=self.ports.sleep)

    async def handle(self, event_type: str, record: dict[str, Any], seq: int,
                     partition: int = 0) -> None:
        """Fold one valid event at log position `seq` and carry out its commands."""
        p = self.ports
        state = plan_state(self.plans, p.tasks, record["plan_id"])
        before = dict(state.header) if state.header else None
        if event_type == "PlanRetired" and state.header \
                and state.header.get("completed_at") == record["finished_at"]:
            # Its tasks leave the board before the tables: a crash in between redoes both.
            await self.dispatch.unpost(state.header["plan_id"], list(state.tasks))
        commands = F.apply(state, event_type, record, seq)
        save_header(self.plans, state, before)
        if event_type == "TaskRedriveRequested" and not commands:
            why = F.redrive_refusal(state.task(record["task_id"]), record) if state.header \
                else f"no plan {record['plan_id']}"
            log.warning("redrive of %s/%s refused: %s", record["plan_id"], record["task_id"],
                        why)
        releases = [c.task_id for c in commands if c.kind == Cmd.RELEASE and c.task_id]
        if len(releases) > 1 and self.ready:  # catching up, releases wait for `recover`
            await self.dispatch.look_ahead(state, releases)
        try:
            for command in commands:
                await self.effects.run(state, command, record, (partition, seq))
        finally:
            self.dispatch.forget_refs()
        # Posted last: what the effects posted (a spent budget holds the plan's queued
        # tasks) is on the board before the slot this event frees.
        await self.dispatch.settle(event_type, record, state, any(c.fresh for c in commands))

    # -- assignment and recovery -----------------------------------------------------
    async def on_assigned(self, ends: Mapping[int, int], committed: Mapping[int, int | None]
                          ) -> None:
        """Partitions were (re)assigned and tables recovered: wait to catch up, then act.

        A rebalance that gives this process the partitions it already had (e.g. after a
        broker restart) changes nothing it knows: it carries on without a pause."""
        self.ahead.reset()
        if self.ready and set(ends) == self.partitions:
            log.info("event partitions unchanged after a rebalance; carrying on")
            return
        self.partitions = set(ends)
        self.ready = False
        self.catchup.start(ends, committed, self.ports.clock())
        log.info("event partitions assigned; reading up to %s before acting",
                 dict(sorted(self.catchup.pending.items())) or "nothing (caught up)")
        if self.catchup.done:
            await self.recover()

    async def recover(self) -> None:
        """Rebuild what lives only in memory from the tables: in-flight work, the ready
        queue, retry timers, undecided failures, unreported plans."""
        p = self.ports
        self.timers.clear()
        redone: dict[str, int] = {}
        for plan_id, header in list(self.plans.items()):
            # A finished plan's tasks have nothing to redo: a start costs the live plans,
            # not the history waiting for retention.
            if not header or header.get("status") in (F.PLAN_DONE, F.REJECTED):
                continue
            for cmd in F.plan_recovery(header):
                redone[cmd.kind] = redone.get(cmd.kind, 0) + 1
                await persist(partial(self.effects.run, plan_state(self.plans, p.tasks, plan_id),
                                      cmd, None),
                              what=f"recovering {cmd.kind} {plan_id}", log=log, sleep=p.sleep)
            for task_id, task in list(plan_state(self.plans, p.tasks, plan_id).tasks.items()):
                for cmd in F.recovery_commands(header, task_id, task):
                    redone[cmd.kind] = redone.get(cmd.kind, 0) + 1
                    await persist(partial(self.effects.run,
                                          plan_state(self.plans, p.tasks, plan_id), cmd, None),
                                  what=f"recovering {cmd.kind} {plan_id}/{task_id}", log=log,
                                  sleep=p.sleep)
        for plan_id, header in list(self.plans.items()):
            if header and F.plan_unreported(header):
                redone["plan_done"] = redone.get("plan_done", 0) + 1
                await persist(partial(self.effects.plan_done,
                                      plan_state(self.plans, p.tasks, plan_id)),
                              what="reporting a plan", log=log, sleep=p.sleep)
        self.ready = True
        log.info("caught up; state recovered: %s", ", ".join(
            f"{n} {k}" for k, n in sorted(redone.items())) or "nothing to redo")

    # -- the dispatcher's inputs (every processor follows them; one acts) ---------------
    async def on_heartbeat_record(self, rec: RawRecord) -> None:
        """A heartbeat as the dispatcher follows them (every processor reads them all)."""
        try:
            event_type, hb = self.ports.codec.decode(rec.value or b"")
        except DecodeError:
            return  # dead-lettered by `check_heartbeat_record` in the partition's owner
        if event_type in HEARTBEATS:
            self.leader.heartbeat(hb)

    async def check_heartbeat_record(self, rec: RawRecord) -> None:
        """Dead-letter a record on devline.workers that is not a heartbeat. Runs in the
        processor Kafka gave the record's partition, so each is dead-lettered once."""
        await self.decoded(rec, HEARTBEATS, T.WORKERS)

    async def on_board_record(self, rec: RawRecord) -> None:
        await self.leader.on_board_record(rec)

    # -- periodic work ----------------------------------------------------------------
    async def tick(self) -> None:
        """Once a second: the link clock; retention; the dispatcher's leases and breakers."""
        up = await self.broker.tick()
        if not self.ready and up and self.catchup.stalled(self.ports.clock()):
            log.warning("catch-up stalled: partitions %s read nothing for %.0fs short of "
                        "their end offsets; acting on what was read", self.catchup.give_up(),
                        CATCHUP_STALL_S)
            await self.recover()
        self.ticks += 1
        if self.ready and self.retention.due(self.ticks):
            await self.retention.sweep()
        await self.leader.tick(self.ticks)

    async def fire_timers(self) -> None:
        if not self.ready:
            return
        await self.timers.fire(self.ports)

    async def pump(self) -> int:
        return await self.leader.pump()

    async def metrics(self) -> None:
        if self.ticks % FIRST_EVERY == 0 and self.ahead.count != self._first_reported:
            # Every processor's own: records folded before Faust's stream brought them.
            self._first_reported = self.ahead.count
            try:
                detach(await self.ports.emit.metric("scheduler", "folded_first",
                                                    self.ahead.count, processor=self.id))
            except Exception as exc:
                log.debug("metric not sent: %s", exc)
        if not self.leader.active:
            return  # the dispatcher's figures, from the dispatcher only
        d = self.dispatcher
        for name, value in (("backlog", d.backlog), ("in_flight", d.in_flight),
                            ("workers", len(d.workers))):
            try:
                detach(await self.ports.emit.metric("scheduler", name, value))
            except Exception as exc:
                log.debug("metric not sent: %s", exc)
