"""Dispatch policy: pair ready tasks with free worker capacity, highest priority first.

Kafka partitions are not a work queue, so work is only ever sent to a worker that has a
free slot, on a partition that worker owns. Nothing waits behind a long task, and no idle
worker waits while ready work exists. Pure logic: no Kafka, time passed in.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

KIND_RANK = {"fix": 0, "dev": 1}


@dataclass
class WorkerInfo:
    """What the dispatcher knows of one worker process, from its heartbeats."""

    worker_id: str
    capacity: int
    partitions: list[int]
    state: str
    last_seen: float
    assigned: set[tuple[str, str]] = field(default_factory=set)
    running: set[str] = field(default_factory=set)  # "plan/task" as the worker reports

    @property
    def free(self) -> int:
        if self.state in ("draining", "stopped", "starting") or not self.partitions:
            return 0
        return max(self.capacity - len(self.assigned), 0)


@dataclass(frozen=True)
class ReadyTask:
    plan_id: str
    task_id: str
    path: str
    kind: str
    priority: float
    attempt: int
    ready_at: float
    executor: str = "demo"


@dataclass(frozen=True)
class Assignment:
    task: ReadyTask
    worker_id: str
    partition: int


class Dispatcher:
    """Ready queue + worker registry. The caller turns assignments into Kafka records."""

    def __init__(self, worker_timeout: float = 15.0) -> None:
        self.worker_timeout = worker_timeout
        self.workers: dict[str, WorkerInfo] = {}
        self._heap: list[tuple[int, float, int, ReadyTask]] = []
        self._queued: set[tuple[str, str]] = set()
        self._owner: dict[tuple[str, str], str] = {}  # task -> worker it was sent to
        self._busy_paths: dict[str, tuple[str, str]] = {}  # workspace path -> task
        self._seq = itertools.count()
        self._rr = itertools.count()

    # -- ready work -------------------------------------------------------------
    def add_ready(self, task: ReadyTask) -> None:
        """Queue a task (idempotent: a task already queued or in flight is ignored)."""
        key = (task.plan_id, task.task_id)
        if key in self._queued or key in self._owner:
            return
        self._queued.add(key)
        rank = KIND_RANK.get(task.kind, 1)
        heapq.heappush(self._heap, (rank, -task.priority, next(self._seq), task))

    def confirmed(self, plan_id: str, task_id: str) -> None:
        """The log says the task was dispatched: never queue it again (after a restart the
        rebuilt queue can hold a task whose dispatch was not yet read back)."""
        self._queued.discard((plan_id, task_id))

    def drop_plan(self, plan_id: str) -> None:
        """Forget queued work of a plan (e.g. paused or cancelled)."""
        self._heap = [e for e in self._heap if e[3].plan_id != plan_id]
        heapq.heapify(self._heap)
        self._queued = {k for k in self._queued if k[0] != plan_id}

    @property
    def backlog(self) -> int:
        return len(self._queued)

    @property
    def in_flight(self) -> int:
        return len(self._owner)

    # -- workers ----------------------------------------------------------------
    def worker_seen(self, worker_id: str, *, capacity: int, partitions: list[int], state: str,
                    now: float, running: list[str] | None = None) -> None:
        info = self.workers.get(worker_id)
        if state == "stopped":
            if info is not None:
                self._release_worker(info)
            return
        if info is None:
            info = self.workers[worker_id] = WorkerInfo(worker_id, capacity, sorted(partitions),
                                                        state, now)
        info.capacity, info.partitions, info.state, info.last_seen = (
            capacity, sorted(partitions), state, now)
        info.running = set(running or ())

    def expire_workers(self, now: float) -> list[str]:
        """Drop workers silent for longer than the timeout; their tasks stay in Kafka."""
        gone = [w for w, i in self.workers.items() if now - i.last_seen > self.worker_timeout]
        for worker_id in gone:
            self._release_worker(self.workers[worker_id])
        return gone

    def _release_worker(self, info: WorkerInfo) -> None:
        # Its in-flight records stay uncommitted in Kafka; the partition's next owner
        # redelivers them, so we only forget the capacity accounting here.
        for key in info.assigned:
            self._owner.pop(key, None)
        self._busy_paths = {p: k for p, k in self._busy_paths.items() if k not in info.assigned}
        self.workers.pop(info.worker_id, None)

    def lost(self, outstanding: dict[tuple[str, str], tuple[str, float]], now: float,
             lease: float) -> list[tuple[str, str]]:
        """Dispatched tasks older than `lease` whose worker is gone and that no live worker
        reports running: their work item went with the worker (or never arrived)."""
        running = set().union(*(w.running for w in self.workers.values())) if self.workers \
            else set()
        return [key for key, (worker_id, since) in outstanding.items()
                if now - since > lease and worker_id not in self.workers
                and f"{key[0]}/{key[1]}" not in running]

    def task_finished(self, plan_id: str, task_id: str) -> None:
        """A task completed or failed: free its worker slot and its path."""
        key = (plan_id, task_id)
        self._queued.discard(key)
        worker_id = self._owner.pop(key, None)
        if worker_id and worker_id in self.workers:
            self.workers[worker_id].assigned.discard(key)
        self._busy_paths = {p: k for p, k in self._busy_paths.items() if k != key}

    # -- the decision -----------------------------------------------------------
    def assign(self, now: float, admit: Callable[[ReadyTask], bool] | None = None
               ) -> list[Assignment]:
        """Pair queued tasks with free slots in priority order; return the pairs made.

        `admit` may refuse a task (open breaker, rate limit, spent budget): it stays queued
        and the next task in priority order gets the slot.
        """
        out: list[Assignment] = []
        skipped: list[tuple[int, float, int, ReadyTask]] = []
        while self._heap:
            worker = self._pick_worker()
            if worker is None:
                break
            entry = heapq.heappop(self._heap)
            task = entry[3]
            key = (task.plan_id, task.task_id)
            if key not in self._queued:
                continue  # dropped meanwhile
            if task.path in self._busy_paths:
                skipped.append(entry)  # two writers of one path never run at once
                continue
            if admit is not None and not admit(task):
                skipped.append(entry)
                continue
            self._queued.discard(key)
            self._owner[key] = worker.worker_id
            worker.assigned.add(key)
            self._busy_paths[task.path] = key
            partition = worker.partitions[next(self._rr) % len(worker.partitions)]
            out.append(Assignment(task, worker.worker_id, partition))
        for entry in skipped:
            heapq.heappush(self._heap, entry)
        return out

    def _pick_worker(self) -> WorkerInfo | None:
        # The worker with most free slots spreads load; ties by id for determinism.
        best = None
        for info in self.workers.values():
            if info.free <= 0:
                continue
            if best is None or (info.free, best.worker_id) > (best.free, info.worker_id):
                best = info
        return best
