"""Retry timers: a heap of (due, plan, task, attempt); rebuilt from the table on restart."""

from __future__ import annotations

import heapq
import logging
from functools import partial

from agents.scheduling import fold as F
from agents.scheduling.model import decision_id
from streams.edge.persist import persist
from streams.edge.ports import Ports

log = logging.getLogger("devline.scheduler")


class RetryTimers:
    def __init__(self) -> None:
        self._heap: list[tuple[int, str, str, int]] = []
        self._armed: set[tuple[str, str, int]] = set()

    def arm(self, due_ms: int, plan_id: str, task_id: str, attempt: int) -> None:
        """Arm once per (task, attempt); arming again is a no-op."""
        key = (plan_id, task_id, attempt)
        if key in self._armed:
            return
        self._armed.add(key)
        heapq.heappush(self._heap, (due_ms, plan_id, task_id, attempt))

    def due(self, now_ms: int) -> list[tuple[str, str, int]]:
        out = []
        while self._heap and self._heap[0][0] <= now_ms:
            _, plan_id, task_id, attempt = heapq.heappop(self._heap)
            self._armed.discard((plan_id, task_id, attempt))
            out.append((plan_id, task_id, attempt))
        return out

    async def fire(self, p: Ports) -> None:
        """A TaskReady for each retry that is due (and still waiting at that attempt)."""
        for plan_id, task_id, attempt in self.due(p.now_ms()):
            task = p.tasks.get(f"{plan_id}/{task_id}")
            if not task or task["status"] != F.RETRY_WAIT or task["attempt"] != attempt:
                continue
            event = {"event_id": decision_id(plan_id, task_id, attempt, "due"),
                     "plan_id": plan_id, "task_id": task_id, "path": task["spec"]["path"],
                     "kind": task["kind"], "attempt": attempt,
                     "priority": float(task["spec"]["priority"]), "cache_key": "",
                     "ready_at": p.now_ms()}
            await persist(partial(p.publish, "TaskReady", event),
                          what="firing a retry timer", log=log, sleep=p.sleep)

    def clear(self) -> None:
        self._heap.clear()
        self._armed.clear()

    def __len__(self) -> int:
        return len(self._heap)
