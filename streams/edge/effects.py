"""One handler per command kind. Every handler is idempotent: it may run again after a
crash (the event redelivered, or recovery) and leaves the same files, tables and log."""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any, assert_never

from agents.scheduling import fold as F
from agents.scheduling.fold import PlanState
from agents.scheduling.model import Cmd, Command
from streams.edge.leader import HELD

if TYPE_CHECKING:
    from streams.edge.processor import Processor

log = logging.getLogger("devline.effects")


class Effects:
    def __init__(self, processor: Processor) -> None:
        self.proc = processor
        self.p = processor.ports

    async def run(self, state: PlanState, cmd: Command, record: dict[str, Any] | None,
                  origin: tuple[int, int] | None = None) -> None:
        """Carry out `cmd`; `record` is the event that led to it (None in recovery) and
        `origin` its (partition, offset) in devline.events."""
        proc = self.proc
        task_id = cmd.task_id or ""
        match cmd.kind:
            case Cmd.RELEASE:
                # While catching up, the log may already hold what these decide (a cache
                # hit, a dispatch, a retry, the summary); `recover` redoes what is still
                # pending, so a restart (or a rebuild after `devline reset`) decides
                # nothing twice.
                if proc.ready or record is None:
                    await proc.dispatch.release(state, task_id)
            case Cmd.SEND_WORK:
                await proc.dispatch.send_work(state, task_id, origin)
            case Cmd.STORE:
                await self.store(state, cmd, record)
            case Cmd.DECIDE_FAILURE:
                if proc.ready or record is None:  # else `recover` decides if still undecided
                    await proc.failures.decide(state, task_id)
            case Cmd.ARM_TIMER:
                task = state.task(task_id)
                if task is not None and task["status"] == F.RETRY_WAIT:
                    proc.timers.arm(int(task["due_at"] or 0), cmd.plan_id, task_id,
                                    task["attempt"])
            case Cmd.DEAD_LETTER:
                await proc.failures.dead_letter(state, task_id, cmd.data or {})
            case Cmd.PLAN_DONE:
                if proc.ready or record is None:  # else `recover` reports it if still due
                    await self.plan_done(state)
            case Cmd.REDRIVE:
                await proc.failures.redrive(state, task_id, cmd.data or {})
            case Cmd.INTEGRATE:
                await proc.integrating.plan(state)
            case Cmd.SEND_SHARDS:
                if cmd.data:
                    await proc.integrating.send(state, cmd.data["event"])
            case Cmd.RECORD_TESTS:
                if cmd.data:
                    await proc.integrating.record(state, cmd.data["event"], cmd.fresh)
            case _:
                assert_never(cmd.kind)

    async def store(self, state: PlanState, cmd: Command, record: dict[str, Any] | None
                    ) -> None:
        """A finished task: its content in the artifact store, its cache entry, and (once)
        its outcome fed to the executor's breaker."""
        task = state.task(cmd.task_id or "")
        if task is None or task["status"] != F.DONE:
            return
        digest = task["content_hash"] or ""
        content = (record or {}).get("content")
        if content is not None and (record or {}).get("content_hash") == digest:
            data = content.encode("utf-8")
            if hashlib.sha256(data).hexdigest() == digest:
                await self.proc.writes.write(self.p.store.put(data), digest)
            else:
                log.error("task %s/%s: content does not match its hash %s; not stored",
                          cmd.plan_id, cmd.task_id, digest[:12])
        if not task["cached"] and task["cache_key"]:
            entry = {"content_hash": digest, "size": task["size"]}
            old = self.p.cache.get(task["cache_key"]) or {}
            if {k: old.get(k) for k in entry} != entry:  # `at` says when: for its expiry
                self.p.cache[task["cache_key"]] = {
                    **entry, "at": int(task["completed_at"] or self.p.now_ms())}
            # The table lives with this plan's partition; the ref in the shared store
            # lets a processor owning another partition find the entry too.
            await self.proc.writes.write(self.p.store.put_ref(task["cache_key"], digest))
        if cmd.fresh and record is not None and await self.proc.guard.check_budget(state):
            for task_id, other in state.tasks.items():  # spent: off the dispatcher's queue
                if other["status"] == F.READY:
                    await self.proc.dispatch.post(state, task_id, HELD)

    async def plan_done(self, state: PlanState) -> None:
        h = state.header
        if not F.plan_unreported(h):
            return
        await self.p.publish("PlanCompleted", {
            "plan_id": h["plan_id"], "files": h["total"], "executor_runs": h["executor_runs"],
            "cache_hits": h["cache_hits"], "failed": h.get("dead", 0),
            "makespan_ms": max((h["completed_at"] or 0) - h["accepted_at"], 0),
            "completed_at": h["completed_at"] or self.p.now_ms()})
        log.info("plan %s done: %d files, %d executor runs, %d cache hits",
                 h["plan_id"], h["total"], h["executor_runs"], h["cache_hits"])
