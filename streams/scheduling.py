"""Scheduler agents: fold plan events into tables, release and dispatch work, decide retries.

State changes only when an event is read back from `devline.events`, so the tables always
equal a fold of the log. What this module sends (dispatches, cached completions, retry
decisions) is itself an event that the fold will read.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from agents.context import build_context
from agents.executors.config import Executors
from agents.resilience.backoff import BackoffPolicy
from agents.scheduling import fold as F
from agents.scheduling.cache import cache_key
from agents.scheduling.dispatch import Assignment, Dispatcher, ReadyTask
from devline.errors import DecodeError
from streams import topics as T
from streams.emit import dead_letter_headers, new_id, now_ms
from streams.guarding import GuardEdge
from streams.poison import dead_letter_message, guarded
from streams.workspace import write_output

if TYPE_CHECKING:
    from streams.app import Pipeline

log = logging.getLogger("devline.scheduler")

PLAN_EVENTS = {"PlanAccepted", "PlanRejected", "TaskDispatched", "TaskCompleted", "TaskFailed",
               "TaskRetryScheduled", "TaskReady", "TaskDeadLettered", "PlanCompleted",
               "QAResult", "Escalation", "IntegrationResult", "DeploymentEvent"}


class Scheduler:
    """The edge around the fold and the dispatcher for one pipeline."""

    def __init__(self, pipeline: Pipeline, policy: BackoffPolicy | None = None) -> None:
        self.p = pipeline
        self.dispatcher = Dispatcher()
        self.guard = GuardEdge(pipeline)
        self.executors = Executors.from_file(pipeline.settings.executor_config)
        self.policy = policy or BackoffPolicy(initial=1.0, max_interval=60.0,
                                              max_attempts=pipeline.settings.max_attempts)
        self.rng = random.Random()
        self.timers: list[tuple[int, str, str, int]] = []  # (due_ms, plan, task, attempt)
        # Dispatched, no result yet: (plan, task) -> (worker it went to, since when).
        self.outstanding: dict[tuple[str, str], tuple[str, float]] = {}
        self.lease_s = 20.0

    # -- reading the log --------------------------------------------------------
    async def on_event(self, message: Any) -> None:
        try:
            event_type, record = self.p.codec.decode(message.value or b"")
        except DecodeError as exc:
            await dead_letter_message(self.p, message, f"undecodable: {exc}")
            return
        if event_type not in PLAN_EVENTS or not record.get("plan_id"):
            await dead_letter_message(self.p, message,
                                      f"unexpected event type {event_type} on {T.EVENTS}")
            return
        plan_id = record["plan_id"]
        header = self.p.plans.get(plan_id)
        state = F.PlanState(dict(header) if header else {}, self.p.task_view(plan_id))
        commands = F.apply(state, event_type, record)
        if state.header and state.header != header:
            self.p.plans[plan_id] = state.header
        if event_type in ("TaskCompleted", "TaskFailed"):
            self.dispatcher.task_finished(plan_id, record["task_id"])
        elif event_type == "TaskDispatched":
            self.dispatcher.confirmed(plan_id, record["task_id"])
        if record.get("task_id"):
            self.track(plan_id, record["task_id"], state.tasks.get(record["task_id"]))
        for command in commands:
            await self.run_command(state, command, record)
        await self.pump()

    async def run_command(self, state: F.PlanState, cmd: F.Command, record: dict[str, Any]
                          ) -> None:
        if cmd.kind == "release":
            await self.release(state, cmd.task_id or "")
        elif cmd.kind == "completed":
            self.store_output(state, record)
            await self.guard.on_result("TaskCompleted", record)
            await self.guard.check_budget(state)
        elif cmd.kind == "retry_wait":
            heapq.heappush(self.timers, (int(cmd.data["due_at"]), cmd.plan_id, cmd.task_id or "",
                                         int(cmd.data["attempt"])))
        elif cmd.kind == "decide_failure":
            await self.guard.on_result("TaskFailed", record)
            await self.decide_failure(state, record)
        elif cmd.kind == "plan_done":
            h = state.header
            await self.p.emit.event("PlanCompleted", {
                "plan_id": h["plan_id"], "files": h["total"], "executor_runs": h["executor_runs"],
                "cache_hits": h["cache_hits"], "failed": h.get("dead", 0),
                "makespan_ms": max((h["completed_at"] or 0) - h["accepted_at"], 0),
                "completed_at": h["completed_at"] or now_ms()})
            log.info("plan %s done: %d files, %d executor runs, %d cache hits",
                     h["plan_id"], h["total"], h["executor_runs"], h["cache_hits"])

    # -- release, cache, dispatch -----------------------------------------------
    def key_for(self, state: F.PlanState, task: dict[str, Any]) -> str:
        spec = task["spec"]
        deps = [state.tasks[d]["content_hash"] or "" for d in spec["depends_on"]]
        return cache_key(spec, self.executors.identity(spec["executor"]), deps)

    async def release(self, state: F.PlanState, task_id: str) -> None:
        task = state.tasks[task_id]
        key = self.key_for(state, task)
        hit = self.p.cache.get(key)
        if hit and task["attempt"] == 1 and task["kind"] == "dev":
            at = now_ms()
            await self.p.emit.event("TaskCompleted", {
                "event_id": new_id(), "plan_id": state.header["plan_id"], "task_id": task_id,
                "path": task["spec"]["path"], "attempt": task["attempt"], "worker_id": "cache",
                "dispatch_id": "", "executor": task["spec"]["executor"], "cache_key": key,
                "content": None, "content_hash": hit["content_hash"], "size": hit.get("size", 0),
                "cached": True, "started_at": at, "finished_at": at, "tokens": None,
                "cost": None})
            return
        self.dispatcher.add_ready(ReadyTask(
            state.header["plan_id"], task_id, f"{state.header['project']}/{task['spec']['path']}",
            task["kind"], float(task["spec"]["priority"]), task["attempt"], time.time(),
            task["spec"]["executor"]))

    def store_output(self, state: F.PlanState, record: dict[str, Any]) -> None:
        digest = record["content_hash"]
        content = record.get("content")
        if content is not None and self.p.artifacts.get(digest) is None:
            self.p.artifacts[digest] = content
        if not record.get("cached"):
            self.p.cache[record["cache_key"]] = {"content_hash": digest, "size": record["size"]}
        if content is None:
            content = self.p.artifacts.get(digest)
        if content is not None:
            write_output(self.p.settings.workspace, state.header["project"], record["path"],
                         content)

    async def pump(self) -> None:
        """Send every assignment the dispatcher can make now.

        Work items first, and only once the broker holds them the TaskDispatched events:
        the log must never say "dispatched" about work that was lost in a crash. (The other
        way round a crash costs at most a second run of the task.)
        """
        sent = []
        for assignment in self.dispatcher.assign(time.time(), admit=self.guard.admit):
            dispatched = await self.dispatch(assignment)
            if dispatched is not None:
                sent.append(dispatched)
        if sent:
            await asyncio.gather(*(delivery for delivery, _ in sent if delivery is not None))
            for _, event in sent:
                await self.p.emit.event("TaskDispatched", event)
        await self.guard.publish()  # admitting may have moved a breaker to half-open

    async def dispatch(self, a: Assignment) -> tuple[Any, dict[str, Any]] | None:
        """Queue the work item for `a`; return its delivery and the TaskDispatched to send."""
        t = a.task
        header = self.p.plans.get(t.plan_id)
        if header is None:
            return None
        state = F.PlanState(dict(header), self.p.task_view(t.plan_id))
        task = state.tasks[t.task_id]
        spec = task["spec"]
        deps = [(d, state.tasks[d]["content_hash"] or "",
                 self.p.artifacts.get(state.tasks[d]["content_hash"] or ""))
                for d in spec["depends_on"]]
        dispatch_id = new_id()
        at = now_ms()
        item = {
            "plan_id": t.plan_id, "task_id": t.task_id, "path": spec["path"],
            "language": spec.get("language"), "description": spec.get("description") or "",
            "content": spec.get("content"), "executor": spec["executor"], "attempt": t.attempt,
            "kind": t.kind, "priority": t.priority, "cache_key": self.key_for(state, task),
            "dispatch_id": dispatch_id, "worker_id": a.worker_id, "simulate": spec.get("simulate"),
            "context": [{"path": c.path, "content_hash": c.content_hash, "content": c.content,
                         "interface": c.interface} for c in build_context(deps)],
            "options": dict(header.get("options") or {}), "dispatched_at": at,
        }
        delivery = await self.p.emit.event("WorkItem", item, topic=T.WORK_DEV, key=t.task_id,
                                           partition=a.partition)
        return delivery, {
            "event_id": new_id(), "plan_id": t.plan_id, "task_id": t.task_id,
            "path": spec["path"], "kind": t.kind, "attempt": t.attempt,
            "worker_id": a.worker_id, "partition": a.partition, "dispatch_id": dispatch_id,
            "dispatched_at": at}

    # -- failures ------------------------------------------------------------------
    async def decide_failure(self, state: F.PlanState, failed: dict[str, Any]) -> None:
        plan_id, task_id = failed["plan_id"], failed["task_id"]
        task = state.tasks[task_id]
        decision = self.policy.decide(F.attempts_used(task), bool(failed["retryable"]),
                                      failed["error"], rng=self.rng,
                                      retry_after=failed.get("retry_after_s"))
        if not decision.retry:
            await self.dead_letter(state, failed, decision.reason, "dead_letter")
            return
        k = self.p.settings.no_progress_repeats
        recent = task["errors"][-k:]
        if len(recent) == k and len(set(recent)) == 1:
            # The same error k times in a row: another attempt will not help.
            await self.dead_letter(state, failed, f"no progress: the same error {k} times "
                                   f"in a row ({failed['error'][:200]})", "no_progress")
            return
        delay_ms = int(decision.delay * 1000)
        await self.p.emit.event("TaskRetryScheduled", {
            "event_id": new_id(), "plan_id": plan_id, "task_id": task_id,
            "path": failed["path"], "attempt": failed["attempt"] + 1, "delay_ms": delay_ms,
            "due_at": now_ms() + delay_ms, "reason": decision.reason})

    async def dead_letter(self, state: F.PlanState, failed: dict[str, Any], reason: str,
                          kind: str) -> None:
        """Park a task: DLQ record (the failure, reason in headers), event, PM escalation."""
        plan_id, task_id = failed["plan_id"], failed["task_id"]
        task = state.tasks[task_id]
        await self.p.emit.event("TaskDeadLettered", {
            "event_id": new_id(), "plan_id": plan_id, "task_id": task_id, "path": failed["path"],
            "attempts": failed["attempt"], "reason": reason,
            "fingerprint": failed["fingerprint"], "at": now_ms()})
        await self.p.emit.dead_letter(
            self.p.codec.encode("TaskFailed", failed), task_id.encode(),
            [*dead_letter_headers(reason, topic=self.p.settings.topic(T.EVENTS),
                                  partition=None, offset=None, attempt=failed["attempt"],
                                  fingerprint=failed["fingerprint"], event_type="TaskFailed"),
             ("plan-id", plan_id.encode()), ("task-id", task_id.encode())])
        await self.p.emit.event("Escalation", {
            "event_id": new_id(), "plan_id": plan_id, "task_id": task_id, "kind": kind,
            "reason": reason, "attempts": failed["attempt"], "errors": task["errors"],
            "last_output": failed.get("output"), "at": now_ms()}, topic=T.ESCALATIONS)
        log.warning("task %s/%s dead-lettered after %d attempts: %s", plan_id, task_id,
                    failed["attempt"], reason)

    async def fire_timers(self) -> None:
        now = now_ms()
        while self.timers and self.timers[0][0] <= now:
            _, plan_id, task_id, attempt = heapq.heappop(self.timers)
            task = self.p.tasks.get(f"{plan_id}/{task_id}")
            if not task or task["status"] != F.RETRY_WAIT or task["attempt"] != attempt:
                continue
            await self.p.emit.event("TaskReady", {
                "event_id": new_id(), "plan_id": plan_id, "task_id": task_id,
                "path": task["spec"]["path"], "kind": task["kind"], "attempt": attempt,
                "priority": float(task["spec"]["priority"]), "cache_key": "", "ready_at": now})

    # -- leases -------------------------------------------------------------------
    def track(self, plan_id: str, task_id: str, task: dict[str, Any] | None) -> None:
        key = (plan_id, task_id)
        if task is not None and task["status"] == F.DISPATCHED:
            if key not in self.outstanding:
                self.outstanding[key] = (task["worker_id"] or "", time.time())
        else:
            self.outstanding.pop(key, None)

    async def reclaim_lost(self) -> None:
        """Re-open dispatches whose worker is gone and that nobody runs (lease expired)."""
        now = time.time()
        for plan_id, task_id in self.dispatcher.lost(self.outstanding, now, self.lease_s):
            task = self.p.tasks.get(f"{plan_id}/{task_id}")
            worker, _ = self.outstanding[(plan_id, task_id)]
            self.outstanding[(plan_id, task_id)] = (worker, now)  # once per lease
            if not task or task["status"] != F.DISPATCHED:
                continue
            log.warning("task %s/%s: worker %s is gone and nobody runs it; dispatching again",
                        plan_id, task_id, worker)
            await self.p.emit.event("TaskReady", {
                "event_id": new_id(), "plan_id": plan_id, "task_id": task_id,
                "path": task["spec"]["path"], "kind": task["kind"], "attempt": task["attempt"],
                "priority": float(task["spec"]["priority"]), "cache_key": "",
                "ready_at": now_ms()})

    # -- recovery -----------------------------------------------------------------
    async def rebuild(self) -> None:
        """After table recovery: redo what a crash may have lost (release ready tasks, arm
        retry timers, decide undecided failures, report finished plans)."""
        self.guard.restore()
        redone: dict[str, int] = {}
        for key, task in list(self.p.tasks.items()):
            plan_id, _, task_id = key.partition("/")
            header = self.p.plans.get(plan_id)
            if not header or not task:
                continue
            state = F.PlanState(dict(header), self.p.task_view(plan_id))
            self.track(plan_id, task_id, task)
            for cmd in F.recovery_commands(header, task_id, task):
                redone[cmd.kind] = redone.get(cmd.kind, 0) + 1
                await self.run_command(state, cmd, cmd.data)
        for plan_id, header in list(self.p.plans.items()):
            if header and F.plan_unreported(header):
                redone["plan_done"] = redone.get("plan_done", 0) + 1
                await self.run_command(F.PlanState(dict(header), self.p.task_view(plan_id)),
                                       F.Command("plan_done", plan_id), {})
        log.info("scheduler state recovered: %s", ", ".join(
            f"{n} {k}" for k, n in sorted(redone.items())) or "nothing to redo")
        await self.pump()

    async def on_heartbeat(self, message: Any) -> None:
        try:
            event_type, hb = self.p.codec.decode(message.value or b"")
        except DecodeError as exc:
            await dead_letter_message(self.p, message, f"undecodable: {exc}")
            return
        if event_type != "WorkerHeartbeat":
            await dead_letter_message(self.p, message, f"unexpected {event_type} on {T.WORKERS}")
            return
        self.dispatcher.worker_seen(hb["worker_id"], capacity=hb["capacity"],
                                    partitions=list(hb["partitions"]), state=hb["state"],
                                    now=time.time(), running=list(hb["running"]))
        await self.pump()


def register_scheduler(pipeline: Pipeline) -> Scheduler:
    sched = Scheduler(pipeline)
    pipeline.scheduler = sched  # type: ignore[attr-defined]
    app = pipeline.app

    @app.agent(pipeline.events_topic, name="scheduler")
    async def scheduler_agent(stream: Any) -> None:
        async for event in stream.events():
            await guarded(pipeline, event.message, sched.on_event)

    @app.agent(pipeline.workers_topic, name="worker-registry")
    async def registry_agent(stream: Any) -> None:
        async for event in stream.events():
            await guarded(pipeline, event.message, sched.on_heartbeat)

    @app.timer(interval=0.1)
    async def retry_timer() -> None:
        await sched.fire_timers()

    @app.timer(interval=1.0)
    async def housekeeping() -> None:
        sched.dispatcher.expire_workers(time.time())
        await sched.reclaim_lost()
        await sched.guard.tick()
        await sched.pump()
        d = sched.dispatcher
        await pipeline.emit.metric("scheduler", "backlog", d.backlog)
        await pipeline.emit.metric("scheduler", "in_flight", d.in_flight)
        await pipeline.emit.metric("scheduler", "workers", len(d.workers))

    @pipeline.tasks.on_recover
    async def recovered() -> None:
        await sched.rebuild()

    return sched
