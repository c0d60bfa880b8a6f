"""The dispatcher: the one process of a topic prefix that pairs ready tasks with free
worker slots.

Every processor folds the plans of the `devline.events` partitions Kafka gave it and posts
each task's state to the dispatch board (`devline.dispatch`: one partition, compacted, key
`plan_id/task_id`). Every processor follows the board and the worker heartbeats, so each
holds a warm copy of the ready queue, the in-flight work and the workers; only the one that
Kafka assigned the board's partition in the `devline-dispatcher` group acts on it
(`active`). It logs `TaskDispatched` to the plan's partition; the plan's processor sends the
work item when its fold takes the dispatch. Two dispatchers for a moment (a rebalance) cost
a wasted reservation, never a second run: the fold takes one dispatch per task.

    board entry ─▶ ready: queue it │ dispatched: it holds a slot │ over: free the slot,
                                     feed the executor's breaker with a fresh outcome
    heartbeat   ─▶ worker registry (capacity, partitions, what it runs)
    ops decision ─▶ (acted ones) reprioritise: re-order the queue; pause/resume an executor
    pump        ─▶ TaskDispatched for each free slot, fixes first, then highest priority

Breaker state is the dispatcher's: it is snapshotted to the board (`breaker/<executor>`)
so the next dispatcher starts from it. Pure of Kafka: records in, events out (`Ports`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from agents.scheduling.dispatch import Dispatcher, ReadyTask
from agents.scheduling.model import decision_id
from streams import topics as T
from streams.edge.link import BrokerLink
from streams.edge.ports import Ports, RawRecord
from streams.edge.state import split_key
from streams.guarding import GuardEdge

log = logging.getLogger("devline.dispatch")

Key = tuple[str, str]
READY, DISPATCHED, HELD = "ready", "dispatched", "held"
BREAKER_PREFIX = "breaker/"
RESERVATION_S = 30.0  # a logged dispatch not read back by then is given up (link time)
SNAPSHOT_EVERY = 1    # ticks (seconds) between breaker snapshots, when they changed


def board_key(plan_id: str, task_id: str) -> str:
    return f"{plan_id}/{task_id}"


class Leader:
    """The dispatcher's state and decisions; `active` only in the elected process."""

    def __init__(self, ports: Ports, dispatcher: Dispatcher, broker: BrokerLink,
                 guard: GuardEdge, lease_s: float = 20.0,
                 reject: Callable[[RawRecord, str], Awaitable[None]] | None = None) -> None:
        self.p = ports
        self.dispatcher = dispatcher
        self.broker = broker
        self.link = broker.clock
        self.guard = guard
        self.lease_s = lease_s
        self.reject = reject
        self.entries: dict[Key, dict[str, Any]] = {}  # ready or dispatched: the latest entry
        self.seqs: dict[Key, int] = {}  # newest entry seen per task (older ones are late)
        self.active = False
        self.board_pos = 0           # next board offset to read
        self.board_target = 0        # board offset to reach before acting (after election)
        self.generation = -1
        self._snapshot_due: set[str] = set()
        self.paused: set[str] = set()  # executors the ops agent paused: nothing dispatched
        # Told of the dispatches the broker acknowledged, with each acknowledgement (the
        # processor folds those of its own partitions at once: `streams.edge.ahead`).
        self.logged: Callable[[list[tuple[str, dict[str, Any], Any]]], Awaitable[None]] \
            | None = None

    # -- election ----------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Elected and caught up with the board as it was when elected."""
        return self.active and self.board_pos >= self.board_target

    def elected(self, board_end: int, generation: int = 0) -> None:
        self.active, self.board_target, self.generation = True, board_end, generation
        log.info("elected dispatcher (pid %d, generation %d); reading the board up to %d "
                 "(at %d)", os.getpid(), generation, board_end, self.board_pos)

    def deposed(self) -> None:
        if self.active:
            log.info("no longer the dispatcher")
        self.active = False
        # Reservations we logged are the log's to decide; forget ours (and their permits).
        for key, held in list(self.dispatcher.inflight.items()):
            if not held.confirmed:
                self.dispatcher.refused(key, held.dispatch_id)
                self.guard.guards.forget(key, self.p.clock())
                if key in self.entries and self.entries[key]["status"] == READY:
                    self._queue(self.entries[key])

    # -- the board -----------------------------------------------------------------
    async def on_board_record(self, rec: RawRecord) -> None:
        self.board_pos = max(self.board_pos, rec.offset + 1)
        name = (rec.key or b"").decode("utf-8", "replace")
        if rec.value is None:  # a tombstone: the plan retired
            if not name.startswith(BREAKER_PREFIX):
                self.forget(split_key(name))
            return
        try:
            kind, record = self.p.codec.decode(rec.value)
        except Exception as exc:
            await self._bad(rec, f"undecodable: {exc}")
            return
        if kind == "BoardEntry":
            self.apply(record)
        elif kind == "BreakerState":
            self.guard.guards.restore(record["executor"], json.loads(record["state"]))
        else:
            await self._bad(rec, f"unexpected event type {kind} on the dispatch board")

    async def _bad(self, rec: RawRecord, why: str) -> None:
        if self.active and self.reject is not None:
            await self.reject(rec, why)
        else:
            log.warning("ignoring board record %s@%s: %s", rec.partition, rec.offset, why)

    def apply(self, entry: dict[str, Any]) -> None:
        """One task's state, as its plan's processor folded it."""
        key = (entry["plan_id"], entry["task_id"])
        if entry["seq"] < self.seqs.get(key, -1):
            return  # written late by a processor that no longer owns the plan
        self.seqs[key] = entry["seq"]
        status = entry["status"]
        held = self.dispatcher.inflight.get(key)
        if status == READY:
            if held is not None and held.confirmed:  # that dispatch is over (lease, retry)
                self.dispatcher.task_finished(*key)
                self.guard.guards.forget(key, self.p.clock())
            self.entries[key] = entry
            self._queue(entry)
        elif status == DISPATCHED:
            self.entries[key] = entry
            self.dispatcher.confirmed(key, entry["worker_id"], entry["dispatch_id"],
                                      busy_path(entry), self.link.now())
        else:
            self.entries.pop(key, None)
            self.dispatcher.task_finished(*key)
            outcome = entry.get("outcome")
            if outcome:
                self._result(key, entry)
            else:
                self.guard.guards.forget(key, self.p.clock())

    def _queue(self, entry: dict[str, Any]) -> None:
        self.dispatcher.add_ready(ReadyTask(
            entry["plan_id"], entry["task_id"], busy_path(entry), entry["kind"],
            float(entry["priority"]), entry["attempt"], self.p.clock(), entry["executor"]))

    def _result(self, key: Key, entry: dict[str, Any]) -> None:
        outcome = entry["outcome"]
        _, change = self.guard.guards.on_result(
            key, entry["executor"], failed=outcome != "completed",
            rate_limited=outcome == "rate_limited", retry_after=entry.get("retry_after_s"),
            now=self.p.clock())
        if change is not None and self.active:
            log.info("executor %s concurrency %d -> %d (%s)", entry["executor"], change.old,
                     change.new, change.reason)
        self._snapshot_due.add(entry["executor"])
        if not self.active:
            self.guard.guards.drain()  # the dispatcher of the day published them

    def forget(self, key: Key) -> None:
        self.entries.pop(key, None)
        self.seqs.pop(key, None)
        self.dispatcher.task_finished(*key)
        self.dispatcher.forget_priority(key)
        self.guard.guards.forget(key, self.p.clock())

    def result_seen(self, plan_id: str, task_id: str, attempt: int) -> bool:
        """A worker's result is in the log (read from its headers, before the plan's
        processor folds it): the slot is free now, not one more hop later. Whether a slot
        was freed. The board entry that follows settles the rest (breakers; and a result
        the fold refused puts the dispatch back in flight)."""
        key = (plan_id, task_id)
        held, entry = self.dispatcher.inflight.get(key), self.entries.get(key)
        if held is None or not held.confirmed or entry is None or entry["attempt"] != attempt \
                or entry.get("budgeted"):  # the fold may hold the plan: wait for it
            return False
        self.dispatcher.task_finished(plan_id, task_id)
        return True

    # -- ops decisions -----------------------------------------------------------------
    async def on_ops_record(self, rec: RawRecord) -> None:
        """One record of devline.ops (read from its beginning, so a new dispatcher obeys
        what the last one did)."""
        try:
            kind, record = self.p.codec.decode(rec.value or b"")
        except Exception as exc:
            log.warning("ignoring ops record %s@%s: undecodable: %s", rec.partition,
                        rec.offset, exc)
            return
        if kind == "OpsDecision":
            self.obey(record)

    def obey(self, decision: dict[str, Any]) -> None:
        """Apply an acted OpsDecision: `reprioritise` a task (`params.task_id`) or a plan
        (`params.scope` = plan), `pause_executor` / `resume_executor`. Dry-run ones, `scale`
        (the supervisor's) and `rollback` (the rollout stage's) change nothing here."""
        params = decision.get("params") or {}
        if params.get("acted") != "true":
            return
        action, plan_id = decision["action"], decision.get("plan_id")
        try:
            if action == "reprioritise" and plan_id:
                task_id = None if params.get("scope") == "plan" else params["task_id"]
                self.dispatcher.reprioritise(plan_id, task_id, float(params["priority"]))
            elif action in ("pause_executor", "resume_executor"):
                executor = params.get("executor") or params["target"]
                if action == "pause_executor":
                    self.paused.add(executor)
                else:
                    self.paused.discard(executor)
            else:
                return
        except (KeyError, ValueError) as exc:
            log.warning("ignoring ops decision %s: %r", decision.get("decision_id"), exc)
            return
        if self.active:
            log.info("ops decision %s: %s %s", decision.get("decision_id"), action,
                     params.get("target", plan_id))

    # -- workers ---------------------------------------------------------------------
    def heartbeat(self, hb: dict[str, Any]) -> None:
        if self.broker.heard(hb):
            return
        if self.p.clock() - hb["at"] / 1000 > self.dispatcher.worker_timeout:
            return  # an old heartbeat read after a restart says nothing about now
        self.dispatcher.worker_seen(hb["worker_id"], capacity=hb["capacity"],
                                    partitions=list(hb["partitions"]), state=hb["state"],
                                    now=self.link.now(), running=list(hb["running"]))

    # -- acting ------------------------------------------------------------------------
    async def pump(self) -> int:
        """Log a TaskDispatched for every pair of ready task and free slot there is now.

        A send that fails leaves the reservation: it is read back, or given up after
        RESERVATION_S and the task queued again. Never a record's fault."""
        if not self.ready:
            return 0
        guards, now = self.guard.guards, self.p.clock()
        assignments = self.dispatcher.assign(
            self.link.now(), admit=lambda t: t.executor not in self.paused and guards.admit(
                (t.plan_id, t.task_id), t.executor, now))
        deliveries: list[tuple[dict[str, Any], Any]] = []
        for a in assignments:
            t = a.task
            entry = self.entries.get((t.plan_id, t.task_id))
            if entry is None:
                self.dispatcher.refused((t.plan_id, t.task_id), a.dispatch_id)
                continue
            event = {"event_id": decision_id(t.plan_id, t.task_id, a.dispatch_id),
                     "plan_id": t.plan_id, "task_id": t.task_id, "path": entry["path"],
                     "kind": t.kind, "attempt": t.attempt, "worker_id": a.worker_id,
                     "partition": a.partition, "dispatch_id": a.dispatch_id,
                     "dispatched_at": self.p.now_ms()}
            try:
                deliveries.append((event, await self.p.emit.event("TaskDispatched", event)))
            except Exception as exc:
                log.warning("could not log dispatch of %s/%s (%s); it stays reserved and is "
                            "queued again if it never shows up", t.plan_id, t.task_id, exc)
        if deliveries:  # a slot waits on them: no linger (4 slots/worker: 210 -> 223 tasks/s)
            self.p.emit.urge()
        acked = []
        for event, delivery in deliveries:
            try:
                if delivery is not None:
                    acked.append(("TaskDispatched", event, await delivery))
            except Exception as exc:
                log.warning("a dispatch may not have been logged (%s); the log decides", exc)
        if acked and self.logged is not None:
            await self.logged(acked)
        await self.guard.publish()  # admitting may have moved a breaker to half-open
        return len(assignments)

    async def tick(self, ticks: int) -> None:
        """Once a second, while elected: worker expiry, leases, breakers, snapshots."""
        if not self.ready:
            return
        gone = self.dispatcher.expire_workers(self.link.now())
        if gone:
            log.warning("workers silent for %.0fs: %s", self.dispatcher.worker_timeout,
                        ", ".join(gone))
        await self.reclaim()
        await self.guard.tick()
        if ticks % SNAPSHOT_EVERY == 0:
            await self.snapshot()
        await self.pump()

    async def reclaim(self) -> None:
        """Re-open dispatches whose worker is gone and that nobody runs (lease expired), and
        give up reservations whose dispatch never showed up on the board."""
        now = self.link.now()
        for key in self.dispatcher.lost(now, self.lease_s):
            self.dispatcher.renew(key, now)  # once per lease
            entry = self.entries.get(key)
            if entry is None or entry["status"] != DISPATCHED:
                continue
            plan_id, task_id = key
            log.warning("task %s/%s: worker %s is gone and nobody runs it; dispatching again",
                        plan_id, task_id, entry["worker_id"])
            await self.p.publish("TaskReady", {
                "event_id": decision_id(plan_id, task_id, entry["attempt"], "lease",
                                        entry["dispatch_id"]),
                "plan_id": plan_id, "task_id": task_id, "path": entry["path"],
                "kind": entry["kind"], "attempt": entry["attempt"],
                "priority": float(entry["priority"]), "cache_key": "",
                "ready_at": self.p.now_ms()})
        for key, held in list(self.dispatcher.inflight.items()):
            if not held.confirmed and now - held.since > RESERVATION_S:
                log.warning("dispatch %s of %s/%s never showed up; queueing the task again",
                            held.dispatch_id, *key)
                self.dispatcher.refused(key, held.dispatch_id)
                self.guard.guards.forget(key, self.p.clock())
                entry = self.entries.get(key)
                if entry is not None and entry["status"] == READY:
                    self._queue(entry)

    async def snapshot(self) -> None:
        """Breaker and limiter state of executors that changed, to the board."""
        due, self._snapshot_due = self._snapshot_due, set()
        for executor in sorted(due):
            try:
                await self.p.publish("BreakerState", {
                    "executor": executor, "state": json.dumps(
                        self.guard.guards.state_of(executor)), "at": self.p.now_ms()},
                    topic=T.BOARD, key=f"{BREAKER_PREFIX}{executor}")
            except Exception as exc:
                self._snapshot_due.add(executor)  # next tick
                log.debug("breaker snapshot not sent: %s", exc)


def busy_path(entry: dict[str, Any]) -> str:
    return f"{entry.get('project') or ''}/{entry['path']}"
