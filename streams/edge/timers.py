"""Retry timers: a heap of (due, plan, task, attempt); rebuilt from the table on restart."""

from __future__ import annotations

import heapq


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

    def clear(self) -> None:
        self._heap.clear()
        self._armed.clear()

    def __len__(self) -> int:
        return len(self._heap)
