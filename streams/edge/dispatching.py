"""Release, cache lookups, the dispatch loop, work items and leases.

A dispatch is decided here but happens only through the log: the pump reserves a slot and
logs `TaskDispatched`; the work item is sent when the fold reads that event back and takes
it (`send_work`). A crash before the event is logged loses nothing (the task is still
ready); a crash after it is redone when the event is read again; a dispatch the fold did
not take (the task had moved on) is never sent. So one decision is one work item, and a
redelivered one carries the same dispatch id, which workers drop as a duplicate.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from agents.executors.config import Executors
from agents.scheduling import fold as F
from agents.scheduling.cache import cache_key
from agents.scheduling.dispatch import Dispatcher, InFlight, LinkClock, ReadyTask
from agents.scheduling.fold import PlanState
from agents.scheduling.model import decision_id
from streams import topics as T
from streams.edge.ports import Ports
from streams.edge.state import split_key
from streams.guarding import GuardEdge

log = logging.getLogger("devline.dispatch")

SENT_REMEMBERED = 100_000  # dispatch ids sent by this process (a redelivery is not resent)
RESERVATION_S = 30.0       # a logged dispatch not read back by then is given up (link time)


class DispatchLoop:
    def __init__(self, ports: Ports, dispatcher: Dispatcher, link: LinkClock, guard: GuardEdge,
                 executors: Executors, lease_s: float = 20.0) -> None:
        self.p = ports
        self.dispatcher = dispatcher
        self.link = link
        self.guard = guard
        self.executors = executors
        self.lease_s = lease_s
        self._sent: OrderedDict[str, None] = OrderedDict()

    # -- release ------------------------------------------------------------------
    def key_for(self, state: PlanState, task: Any) -> str:
        spec = task["spec"]
        deps = [(state.tasks[d]["content_hash"] or "") for d in spec["depends_on"]]
        return cache_key(spec, self.executors.identity(spec["executor"]), deps)

    def busy_path(self, state: PlanState, task: Any) -> str:
        return f"{state.header['project']}/{task['spec']['path']}"

    async def release(self, state: PlanState, task_id: str) -> None:
        """A ready task: complete it from the cache, or queue it for dispatch."""
        task = state.task(task_id)
        if task is None or task["status"] != F.READY:
            return
        h = state.header
        key = self.key_for(state, task)
        hit = self.p.cache.get(key)
        if hit and task["attempt"] == 1 and task["kind"] == "dev" \
                and await self.p.store.get(hit["content_hash"]) is not None:
            at = self.p.now_ms()
            await self.p.publish("TaskCompleted", {
                "event_id": decision_id(h["plan_id"], task_id, task["attempt"], "cached"),
                "plan_id": h["plan_id"], "task_id": task_id, "path": task["spec"]["path"],
                "attempt": task["attempt"], "worker_id": "cache", "dispatch_id": "",
                "executor": task["spec"]["executor"], "cache_key": key, "content": None,
                "content_hash": hit["content_hash"], "size": int(hit.get("size") or 0),
                "cached": True, "started_at": at, "finished_at": at, "tokens": None,
                "cost": None, "project": h["project"]})
            return
        self.dispatcher.add_ready(ReadyTask(
            h["plan_id"], task_id, self.busy_path(state, task), task["kind"],
            float(task["spec"]["priority"]), task["attempt"], self.p.clock(),
            task["spec"]["executor"]))

    # -- the pump -------------------------------------------------------------------
    async def pump(self) -> int:
        """Log a TaskDispatched for every assignment the dispatcher can make now.

        Our own failure here (a send that fails) never touches a record: the reservation
        stays until it is read back or given up, then the task is released again.
        """
        assignments = self.dispatcher.assign(self.link.now(), admit=self.guard.admit)
        deliveries = []
        for a in assignments:
            t = a.task
            task = self.p.tasks.get(f"{t.plan_id}/{t.task_id}")
            if task is None:  # the plan left the tables meanwhile
                self.dispatcher.refused((t.plan_id, t.task_id), a.dispatch_id)
                continue
            event = {"event_id": decision_id(t.plan_id, t.task_id, a.dispatch_id),
                     "plan_id": t.plan_id, "task_id": t.task_id, "path": task["spec"]["path"],
                     "kind": t.kind, "attempt": t.attempt, "worker_id": a.worker_id,
                     "partition": a.partition, "dispatch_id": a.dispatch_id,
                     "dispatched_at": self.p.now_ms()}
            try:
                deliveries.append(await self.p.emit.event("TaskDispatched", event))
            except Exception as exc:
                log.warning("could not log dispatch of %s/%s (%s); it stays reserved and is "
                            "released again if it never shows up", t.plan_id, t.task_id, exc)
        for delivery in deliveries:
            try:
                if delivery is not None:
                    await delivery
            except Exception as exc:
                log.warning("a dispatch may not have been logged (%s); the log decides", exc)
        await self.guard.publish()  # admitting may have moved a breaker to half-open
        return len(assignments)

    # -- a dispatch read back ---------------------------------------------------------
    async def send_work(self, state: PlanState, task_id: str,
                        origin: tuple[int, int] | None = None) -> None:
        """The log took a dispatch: make sure its work item is on the work topic. `origin`
        is where the TaskDispatched sits, so a worker can check the item is still current."""
        task = state.task(task_id)
        if task is None or task["status"] != F.DISPATCHED or not task["dispatch_id"]:
            return
        h = state.header
        dispatch_id = task["dispatch_id"]
        self.dispatcher.confirmed((h["plan_id"], task_id), task["worker_id"] or "", dispatch_id,
                                  self.busy_path(state, task), self.link.now())
        if dispatch_id in self._sent:
            return
        spec = task["spec"]
        # Dependencies' outputs by hash: the worker fetches them and builds its context.
        context = sorted((state.tasks[d]["spec"]["path"], state.tasks[d]["content_hash"] or "")
                         for d in spec["depends_on"])
        item = {
            "plan_id": h["plan_id"], "task_id": task_id, "path": spec["path"],
            "language": spec.get("language"), "description": spec.get("description") or "",
            "content": spec.get("content"), "executor": spec["executor"],
            "attempt": task["attempt"], "kind": task["kind"],
            "priority": float(spec["priority"]), "cache_key": self.key_for(state, task),
            "dispatch_id": dispatch_id, "worker_id": task["worker_id"] or "",
            "simulate": spec.get("simulate"),
            "context": [{"path": path, "content_hash": digest, "content": None,
                         "interface": None} for path, digest in context],
            "brief": spec.get("brief"),
            "options": dict(h.get("options") or {}), "dispatched_at": self.p.now_ms(),
            "project": h["project"],
            "dispatch_partition": origin[0] if origin else None,
            "dispatch_offset": origin[1] if origin else None,
        }
        await self.p.publish("WorkItem", item, topic=T.WORK_DEV, key=task_id,
                             partition=task["partition"])
        self._sent[dispatch_id] = None
        while len(self._sent) > SENT_REMEMBERED:
            self._sent.popitem(last=False)

    def settle(self, event_type: str, record: dict[str, Any], state: PlanState) -> None:
        """Keep the dispatcher's in-flight view in line with the task the event left."""
        task_id = record.get("task_id")
        if not task_id or not state.header:
            return
        key = (state.header["plan_id"], task_id)
        task = state.task(task_id)
        if event_type == "TaskDispatched" and (
                task is None or task["dispatch_id"] != record["dispatch_id"]):
            self.dispatcher.refused(key, record["dispatch_id"])
        if task is None:
            return
        if task["status"] == F.READY:
            held = self.dispatcher.inflight.get(key)
            if held is not None and held.confirmed:  # that dispatch is over (lease reopened)
                self.dispatcher.task_finished(*key)
        elif task["status"] != F.DISPATCHED:
            self.dispatcher.task_finished(*key)

    # -- leases and lost reservations ----------------------------------------------------
    async def reclaim(self) -> None:
        """Re-open dispatches whose worker is gone and that nobody runs (lease expired), and
        give up reservations whose dispatch never showed up in the log."""
        now = self.link.now()
        for plan_id, task_id in self.dispatcher.lost(now, self.lease_s):
            self.dispatcher.renew((plan_id, task_id), now)  # once per lease
            task = self.p.tasks.get(f"{plan_id}/{task_id}")
            if not task or task["status"] != F.DISPATCHED:
                continue
            log.warning("task %s/%s: worker %s is gone and nobody runs it; dispatching again",
                        plan_id, task_id, task["worker_id"])
            await self.p.publish("TaskReady", {
                "event_id": decision_id(plan_id, task_id, task["attempt"], "lease",
                                        task["dispatch_id"]),
                "plan_id": plan_id, "task_id": task_id, "path": task["spec"]["path"],
                "kind": task["kind"], "attempt": task["attempt"],
                "priority": float(task["spec"]["priority"]), "cache_key": "",
                "ready_at": self.p.now_ms()})
        for key, held in list(self.dispatcher.inflight.items()):
            if not held.confirmed and now - held.since > RESERVATION_S:
                log.warning("dispatch %s of %s/%s never showed up in the log; releasing the "
                            "task again", held.dispatch_id, *key)
                self.dispatcher.refused(key, held.dispatch_id)
                await self.release_key(key)

    async def reconcile(self) -> int:
        """Level-triggered safety net: bring the dispatcher's memory in line with the tables.

        Every transition already keeps them in step; a fix made here means an edge was
        missed somewhere, so each one is logged as a warning. Returns how many were made.
        """
        fixed = 0
        for key, held in list(self.dispatcher.inflight.items()):
            task = self.p.tasks.get(f"{key[0]}/{key[1]}")
            stale = task is None or (held.confirmed and (
                task["status"] != F.DISPATCHED or task["dispatch_id"] != held.dispatch_id))
            if stale:
                log.warning("in flight %s/%s (dispatch %s, worker %s) but the task is %s "
                            "(dispatch %s): freeing its slot", *key, held.dispatch_id,
                            held.worker_id, task and task["status"], task and task["dispatch_id"])
                self.dispatcher.task_finished(*key)
                fixed += 1
        for name, task in list(self.p.tasks.items()):
            if not task or task["status"] != F.READY:
                continue
            key = split_key(name)
            if not self.dispatcher.is_queued(key) and key not in self.dispatcher.inflight:
                log.warning("task %s/%s is ready but neither queued nor in flight: "
                            "releasing it", *key)
                await self.release_key(key)
                fixed += 1
        return fixed

    async def release_key(self, key: tuple[str, str]) -> None:
        from streams.edge.state import plan_state

        state = plan_state(self.p.plans, self.p.tasks, key[0])
        if state.header:
            await self.release(state, key[1])

    def restore(self, tasks: list[tuple[str, Any]]) -> None:
        """After a restart: what is in flight, from the DISPATCHED tasks of the tables."""
        inflight = []
        for key, task in tasks:
            if task["status"] != F.DISPATCHED or not task.get("dispatch_id"):
                continue
            plan_id, task_id = split_key(key)
            header = self.p.plans.get(plan_id) or {}
            inflight.append(((plan_id, task_id), InFlight(
                task["worker_id"] or "", task["dispatch_id"],
                f"{header.get('project')}/{task['spec']['path']}", self.link.now())))
        self.dispatcher.restore(inflight, [])
