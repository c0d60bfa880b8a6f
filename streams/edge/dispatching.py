"""Release, cache lookups, the dispatch board and work items: the part of dispatching that
belongs to the processor owning a plan's partition.

A ready task is completed from the cache or posted to the dispatch board; the dispatcher
(`streams.edge.leader`, one per prefix) pairs it with a free worker slot and logs
`TaskDispatched`. The work item is sent here when the fold reads that event back and takes
it (`send_work`). A crash before the event is logged loses nothing (the task is still
ready); a crash after it is redone when the event is read again; a dispatch the fold did
not take (the task had moved on) is never sent. So one decision is one work item, and a
redelivered one carries the same dispatch id, which workers drop as a duplicate.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from typing import Any

from agents.executors.config import Executors
from agents.integration.discovery import is_test_file
from agents.scheduling import fixes
from agents.scheduling import fold as F
from agents.scheduling.cache import cache_key
from agents.scheduling.fold import PlanState
from agents.scheduling.guards import Budget
from agents.scheduling.model import decision_id
from streams import topics as T
from streams.edge.leader import DISPATCHED, HELD, READY
from streams.edge.ports import Ports
from streams.edge.retention import touch
from streams.edge.writes import WriteBehind

log = logging.getLogger("devline.dispatch")

QA_FILES_MAX = 2000  # plan files a test file's QA sandbox gets beyond its direct dependencies
SENT_REMEMBERED = 100_000  # dispatch ids sent by this process (a redelivery is not resent)
LOOK_AHEAD_AT_ONCE = 64  # store reads in flight while releasing many tasks (a thread each)
JOURNALS_KEPT = 16  # fork journals held in memory (one per live fork)


class DispatchLoop:
    def __init__(self, ports: Ports, executors: Executors) -> None:
        self.p = ports
        self.executors = executors
        self._sent: OrderedDict[str, None] = OrderedDict()
        self._journals: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._unconfirmed: list[str] = []  # sent, delivery not yet known (`sent`, `unsent`)
        self.writes = WriteBehind()  # the processor's, so a lookup sees its pending writes
        self._refs: dict[str, str | None] = {}  # read ahead for the releases of one event

    # -- release ------------------------------------------------------------------
    def key_for(self, state: PlanState, task: Any) -> str:
        spec = task["spec"]
        deps = [(state.tasks[d]["content_hash"] or "") for d in spec["depends_on"]]
        return cache_key(spec, self.executors.identity(spec["executor"]), deps)

    async def look_ahead(self, state: PlanState, task_ids: list[str]) -> None:
        """Read the store's refs for many releases at once (a plan accepted, a module that
        many files import finished): one wait for them all, not a store round trip each.
        `lookup` takes them until `forget_refs`."""
        keys = []
        for task_id in task_ids:
            task = state.task(task_id)
            if task is not None and task["status"] == F.READY and task["attempt"] == 1 \
                    and task["kind"] == "dev":
                key = self.key_for(state, task)
                if self.p.cache.get(key) is None:
                    keys.append(key)
        for i in range(0, len(keys) if len(keys) > 1 else 0, LOOK_AHEAD_AT_ONCE):
            chunk = keys[i:i + LOOK_AHEAD_AT_ONCE]
            found = await asyncio.gather(*(self.p.store.get_ref(k) for k in chunk))
            self._refs.update(zip(chunk, found, strict=True))

    def forget_refs(self) -> None:
        self._refs.clear()

    async def lookup(self, key: str) -> dict[str, Any] | None:
        """A cached result whose content the store still has: from this processor's `cache`
        table, else from the store's ref (written by whichever processor finished it)."""
        hit = self.p.cache.get(key)
        if hit:
            digest = hit["content_hash"]
        elif key in self._refs:
            digest = self._refs.pop(key)
        else:
            digest = await self.p.store.get_ref(key)
        if not digest:
            return None
        await self.writes.written(digest)  # stored in this batch: wait for it
        data = await self.p.store.get(digest)
        if data is None:
            return None
        return {"content_hash": digest, "size": int(hit.get("size") or 0) if hit
                else len(data)}

    async def journal_hit(self, ref: str, task_id: str, key: str) -> dict[str, Any] | None:
        """The output a fork's source produced for this task from the same inputs (its
        journal, `agents.replay.fork`), if the store has it."""
        if ref not in self._journals:
            data = await self.p.store.get(ref)
            if data is None:
                log.warning("fork journal %s is not in the artifact store: every task of "
                            "the fork runs", ref[:12])
            self._journals[ref] = json.loads(data)["tasks"] if data else {}
            while len(self._journals) > JOURNALS_KEPT:
                self._journals.popitem(last=False)
        kept = self._journals[ref].get(task_id)
        if not kept or kept["input"] != key or await self.p.store.get(
                kept["content_hash"]) is None:
            return None
        return {"content_hash": kept["content_hash"], "size": int(kept["size"])}

    async def release(self, state: PlanState, task_id: str) -> None:
        """A ready task: complete it from the cache, or queue it for dispatch."""
        task = state.task(task_id)
        if task is None or task["status"] != F.READY:
            return
        h = state.header
        key = self.key_for(state, task)
        first = task["attempt"] == 1 and task["kind"] == "dev"
        journal = (h.get("options") or {}).get("fork.journal")
        if journal:  # a fork: its source's outputs with the same inputs, never the cache
            hit = await self.journal_hit(journal, task_id, key) if first else None
        else:
            hit = await self.lookup(key) if first else None
            if hit is not None:
                touch(self.p.cache, key, hit, self.p.now_ms())  # a hit keeps the entry alive
        if hit is not None:
            at = self.p.now_ms()
            await self.p.publish("TaskCompleted", {
                "event_id": decision_id(h["plan_id"], task_id, task["attempt"], "cached"),
                "plan_id": h["plan_id"], "task_id": task_id, "path": task["spec"]["path"],
                "attempt": task["attempt"], "worker_id": "journal" if journal else "cache",
                "dispatch_id": "",
                "executor": task["spec"]["executor"], "cache_key": key, "content": None,
                "content_hash": hit["content_hash"], "size": int(hit.get("size") or 0),
                "cached": True, "started_at": at, "finished_at": at, "tokens": None,
                "cost": None, "project": h["project"]})
            return
        if Budget.from_options(h.get("options") or {}).exhausted_by(
                int(h.get("tokens") or 0), float(h.get("cost") or 0)):
            await self.post(state, task_id, HELD)  # spent: not queued, not re-examined
            return
        await self.post(state, task_id)

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
            "fix": fixes.brief(dict(task)), "qa": self.qa_spec(state, task),
        }
        await self.p.publish("WorkItem", item, topic=T.WORK_DEV, key=task_id,
                             partition=task["partition"])
        self._sent[dispatch_id] = None
        self._unconfirmed.append(dispatch_id)
        while len(self._sent) > SENT_REMEMBERED:
            self._sent.popitem(last=False)

    def sent(self) -> None:
        """The work items sent since the last call were delivered: never send them again."""
        self._unconfirmed.clear()

    def unsent(self) -> None:
        """The sends since the last call may have failed: the handling that made them is
        redone, and must send their work items again."""
        for dispatch_id in self._unconfirmed:
            self._sent.pop(dispatch_id, None)
        self._unconfirmed.clear()

    def qa_spec(self, state: PlanState, task: Any) -> dict[str, Any] | None:
        """The checks the worker runs on the result: the plan's chain, and for a test file
        the plan files it imports through its dependencies (by hash), so its tests run."""
        chain = str((state.header.get("options") or {}).get("qa") or self.p.settings.qa_chain)
        if chain == "off":
            return None
        files: list[dict[str, str]] = []
        if is_test_file(task["spec"]["path"]):
            direct = set(task["spec"]["depends_on"])
            for dep in transitive(state, task["spec"]["task_id"], QA_FILES_MAX):
                record = state.tasks[dep]
                if dep not in direct and record["content_hash"]:
                    files.append({"path": record["spec"]["path"],
                                  "content_hash": record["content_hash"]})
        return {"chain": chain, "previous_hash": None, "files": files}

    # -- the dispatch board ------------------------------------------------------------
    async def post(self, state: PlanState, task_id: str, status: str | None = None,
                   outcome: str | None = None, retry_after_s: float | None = None) -> None:
        """Tell the dispatcher (whichever processor it is) the task's state as the fold left
        it (stamped with the task's `seq`, so a late post of a previous owner is ignored).
        Sent until the broker has it, before the event's offset is committed: a crash
        redoes it."""
        task = state.task(task_id)
        if task is None or not state.header:
            return
        spec = task["spec"]
        status = status or (READY if task["status"] == F.READY else
                            DISPATCHED if task["status"] == F.DISPATCHED else
                            str(task["status"]).lower())
        await self.p.publish("BoardEntry", {
            "plan_id": state.header["plan_id"], "task_id": task_id, "seq": int(task["seq"]),
            "status": status, "path": spec["path"], "project": state.header["project"],
            "kind": task["kind"], "priority": float(spec["priority"]),
            "attempt": task["attempt"], "executor": spec["executor"],
            "dispatch_id": task["dispatch_id"] or "", "worker_id": task["worker_id"] or "",
            "outcome": outcome, "retry_after_s": retry_after_s,
            "budgeted": Budget.from_options(state.header.get("options") or {}) != Budget(),
            "at": self.p.now_ms()},
            topic=T.BOARD, key=f"{state.header['plan_id']}/{task_id}")

    async def unpost(self, plan_id: str, task_ids: list[str]) -> None:
        """Tombstones on the board for a retired plan's tasks, delivered before returning."""
        sends = [await self.p.emit.tombstone(T.BOARD, f"{plan_id}/{t}") for t in task_ids]
        for delivery in sends:
            if delivery is not None:
                await delivery

    async def settle(self, event_type: str, record: dict[str, Any], state: PlanState,
                     fresh: bool) -> None:
        """After the fold: post the task the event touched, unless it is ready (its release
        posts it, once the cache has missed). A fresh executor result carries its outcome
        for the executor's breaker."""
        task_id = str(record.get("task_id") or "")
        task = state.task(task_id) if task_id and state.header else None
        if task is None or task["status"] == F.READY:
            return
        outcome = None
        if fresh and event_type == "TaskCompleted" and not record.get("cached"):
            outcome = "completed"
        elif fresh and event_type == "TaskFailed":
            outcome = "rate_limited" if record.get("error_type") == "rate_limited" \
                else "failed"
        await self.post(state, task_id, outcome=outcome,
                        retry_after_s=record.get("retry_after_s") if outcome else None)


def transitive(state: PlanState, task_id: str, limit: int) -> list[str]:
    """Dependencies of a task, direct and indirect, breadth first, at most `limit`."""
    seen: dict[str, None] = {}
    frontier = list(state.tasks[task_id]["spec"]["depends_on"])
    while frontier and len(seen) < limit:
        nxt = []
        for dep in frontier:
            if dep not in seen and dep in state.tasks:
                seen[dep] = None
                nxt.extend(state.tasks[dep]["spec"]["depends_on"])
        frontier = nxt
    return list(seen)[:limit]
