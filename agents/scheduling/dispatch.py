"""Dispatch policy: pair ready tasks with free worker capacity, highest priority first.

Kafka partitions are not a work queue, so work is only ever sent to a worker that has a
free slot, on a partition that worker owns. Nothing waits behind a long task, and no idle
worker waits while ready work exists. Pure logic: no Kafka, time passed in.

The dispatcher's memory is rebuildable: after a restart `restore` takes the in-flight and
ready tasks from the plan tables, and heartbeats say what each worker runs. Time for
worker expiry and leases is a `LinkClock`, which stands still while the processor cannot
hear the broker: an outage is not "every worker is gone".
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

KIND_RANK = {"fix": 0, "dev": 1}
Key = tuple[str, str]  # (plan_id, task_id)


class LinkClock:
    """Seconds that pass only while the link to the broker works.

    `tick(wall, link_up)` is called often; time between two ticks counts only when the link
    was up at the later one. Worker silences and leases are measured on this clock, so a
    broker outage pauses them instead of expiring every worker at once.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._wall: float | None = None

    def tick(self, wall: float, link_up: bool) -> float:
        if self._wall is not None and link_up:
            self._now += max(0.0, min(wall - self._wall, 5.0))  # a stalled loop is not time
        self._wall = wall
        return self._now

    def now(self) -> float:
        return self._now


@dataclass
class WorkerInfo:
    """What the dispatcher knows of one worker process, from its heartbeats."""

    worker_id: str
    capacity: int
    partitions: list[int]
    state: str
    last_seen: float
    running: set[str] = field(default_factory=set)  # "plan/task" as the worker reports


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
    dispatch_id: str = ""


@dataclass
class InFlight:
    """A task reserved for, or dispatched to, a worker. `confirmed` once the log says so."""

    worker_id: str
    dispatch_id: str
    path: str
    since: float
    confirmed: bool = False


class Dispatcher:
    """Ready queue + worker registry + in-flight work. The caller logs the assignments."""

    def __init__(self, worker_timeout: float = 15.0,
                 new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        self.worker_timeout = worker_timeout
        self.new_id = new_id
        self.workers: dict[str, WorkerInfo] = {}
        self.inflight: dict[Key, InFlight] = {}
        self._heap: list[tuple[int, float, int, ReadyTask]] = []
        self._queued: set[Key] = set()
        self._busy_paths: dict[str, Key] = {}  # workspace path -> task writing it
        self._seq = itertools.count()
        self._rr = itertools.count()
        # Ops decisions (`reprioritise`): a task's new priority, or a plan's priority added
        # to each of its tasks' own. Kept for tasks not queued yet; a task's goes with its
        # plan (`drop_plan`, `forget_priority`); plans are as few as the ops agent's decisions.
        self._priorities: dict[Key, float] = {}
        self._plan_priority: dict[str, float] = {}

    # -- ready work -------------------------------------------------------------
    def add_ready(self, task: ReadyTask) -> None:
        """Queue a task (idempotent: a task already queued or in flight is ignored)."""
        key = (task.plan_id, task.task_id)
        if key in self._queued or key in self.inflight:
            return
        self._queued.add(key)
        heapq.heappush(self._heap, (*self._rank(task), next(self._seq), task))

    def _rank(self, task: ReadyTask) -> tuple[int, float]:
        return KIND_RANK.get(task.kind, 1), -self.priority_of(task)

    def priority_of(self, task: ReadyTask) -> float:
        """The task's priority once ops decisions are applied (fixes still rank first)."""
        override = self._priorities.get((task.plan_id, task.task_id))
        if override is not None:
            return override
        return task.priority + self._plan_priority.get(task.plan_id, 0.0)

    def reprioritise(self, plan_id: str, task_id: str | None, priority: float) -> None:
        """Set a task's priority (or, `task_id` None, the plan's, added to each of its
        tasks') and re-order the queue. Absolute, so a redelivered decision is a no-op."""
        if task_id is None:
            self._plan_priority[plan_id] = priority
        else:
            self._priorities[(plan_id, task_id)] = priority
        self._heap = [(*self._rank(e[3]), e[2], e[3]) for e in self._heap]
        heapq.heapify(self._heap)

    def forget_priority(self, key: Key) -> None:
        self._priorities.pop(key, None)

    def drop_plan(self, plan_id: str) -> None:
        """Forget queued work of a plan (e.g. paused or cancelled)."""
        self._heap = [e for e in self._heap if e[3].plan_id != plan_id]
        heapq.heapify(self._heap)
        self._queued = {k for k in self._queued if k[0] != plan_id}
        self._priorities = {k: v for k, v in self._priorities.items() if k[0] != plan_id}
        self._plan_priority.pop(plan_id, None)

    def discard(self, key: Key) -> None:
        """Take a task out of the queue (it is no longer ready)."""
        self._queued.discard(key)

    @property
    def backlog(self) -> int:
        return len(self._queued)

    @property
    def in_flight(self) -> int:
        return len(self.inflight)

    def is_queued(self, key: Key) -> bool:
        return key in self._queued

    # -- in-flight work -----------------------------------------------------------
    def confirmed(self, key: Key, worker_id: str, dispatch_id: str, path: str,
                  now: float) -> None:
        """The log says `key` was dispatched as `dispatch_id`: that is what runs now (it
        may differ from what this process reserved, e.g. right after a restart)."""
        self._queued.discard(key)
        held = self.inflight.get(key)
        if held is None or held.dispatch_id != dispatch_id:
            if held is not None:
                self._free_path(key)
            held = self.inflight[key] = InFlight(worker_id, dispatch_id, path, now)
        held.confirmed = True
        self._busy_paths.setdefault(path, key)

    def refused(self, key: Key, dispatch_id: str) -> bool:
        """The log did not take our dispatch `dispatch_id` (the task had moved on): drop the
        reservation. Returns whether one was dropped."""
        held = self.inflight.get(key)
        if held is None or held.dispatch_id != dispatch_id or held.confirmed:
            return False
        self.inflight.pop(key)
        self._free_path(key)
        return True

    def task_finished(self, plan_id: str, task_id: str) -> None:
        """A task completed, failed or was reopened: free its slot and its path. The log
        is news the heartbeats have not caught up with: a worker's last heartbeat may still
        list the task, which would hold its slot until the next one (up to a second)."""
        key = (plan_id, task_id)
        self._queued.discard(key)
        if self.inflight.pop(key, None) is not None:
            self._free_path(key)
        name = f"{plan_id}/{task_id}"
        for info in self.workers.values():
            info.running.discard(name)

    def _free_path(self, key: Key) -> None:
        for path, holder in list(self._busy_paths.items()):
            if holder == key:
                del self._busy_paths[path]

    def restore(self, inflight: Iterable[tuple[Key, InFlight]], ready: Iterable[ReadyTask]
                ) -> None:
        """Rebuild from the tables after a restart: what runs where, what is ready."""
        self.inflight = {}
        self._busy_paths = {}
        self._heap = []
        self._queued = set()
        for key, held in inflight:
            held.confirmed = True
            self.inflight[key] = held
            self._busy_paths.setdefault(held.path, key)
        for task in ready:
            self.add_ready(task)

    # -- workers ----------------------------------------------------------------
    def worker_seen(self, worker_id: str, *, capacity: int, partitions: list[int], state: str,
                    now: float, running: list[str] | None = None) -> None:
        if state == "stopped":
            self.workers.pop(worker_id, None)
            return
        info = self.workers.get(worker_id)
        if info is None:
            info = self.workers[worker_id] = WorkerInfo(worker_id, capacity, sorted(partitions),
                                                        state, now)
        info.capacity, info.partitions, info.state, info.last_seen = (
            capacity, sorted(partitions), state, now)
        info.running = set(running or ())

    def expire_workers(self, now: float) -> list[str]:
        """Drop workers silent for longer than the timeout (on the link clock)."""
        gone = [w for w, i in self.workers.items() if now - i.last_seen > self.worker_timeout]
        for worker_id in gone:
            del self.workers[worker_id]
        return gone

    def free_slots(self, info: WorkerInfo) -> int:
        """Capacity minus what we sent it and what it reports running (after a restart the
        latter is all we know of work sent before the crash)."""
        if info.state in ("draining", "stopped", "starting") or not info.partitions:
            return 0
        ours = {f"{p}/{t}" for (p, t), h in self.inflight.items() if h.worker_id == info.worker_id}
        return max(info.capacity - len(ours | info.running), 0)

    def lost(self, now: float, lease: float) -> list[Key]:
        """Dispatched tasks older than `lease` (link clock) whose worker is gone and that no
        live worker reports running: their work item went with the worker."""
        running = set().union(*(w.running for w in self.workers.values())) if self.workers \
            else set()
        return [key for key, held in self.inflight.items()
                if held.confirmed and now - held.since > lease
                and held.worker_id not in self.workers
                and f"{key[0]}/{key[1]}" not in running]

    def renew(self, key: Key, now: float) -> None:
        """Restart a task's lease (it was reopened once; do not reopen it again at once)."""
        if key in self.inflight:
            self.inflight[key].since = now

    # -- the decision -----------------------------------------------------------
    def assign(self, now: float, admit: Callable[[ReadyTask], bool] | None = None
               ) -> list[Assignment]:
        """Pair queued tasks with free slots in priority order; return the pairs made.

        `admit` may refuse a task (open breaker, rate limit, spent budget): it stays queued
        and the next task in priority order gets the slot. Each pair is reserved (slot and
        path) until the log confirms or refuses it.
        """
        out: list[Assignment] = []
        skipped: list[tuple[int, float, int, ReadyTask]] = []
        free = {w: self.free_slots(i) for w, i in self.workers.items()}
        while self._heap:
            worker = self._pick_worker(free)
            if worker is None:
                break
            entry = heapq.heappop(self._heap)
            task = entry[3]
            key = (task.plan_id, task.task_id)
            if key not in self._queued or key in self.inflight:
                continue  # dropped or dispatched meanwhile
            if task.path in self._busy_paths:
                skipped.append(entry)  # two writers of one path never run at once
                continue
            if admit is not None and not admit(task):
                skipped.append(entry)
                continue
            self._queued.discard(key)
            dispatch_id = self.new_id()
            self.inflight[key] = InFlight(worker.worker_id, dispatch_id, task.path, now)
            self._busy_paths[task.path] = key
            free[worker.worker_id] -= 1
            partition = worker.partitions[next(self._rr) % len(worker.partitions)]
            out.append(Assignment(task, worker.worker_id, partition, dispatch_id))
        for entry in skipped:
            heapq.heappush(self._heap, entry)
        return out

    def _pick_worker(self, free: dict[str, int]) -> WorkerInfo | None:
        # The worker with most free slots spreads load; ties by id for determinism.
        best = None
        for worker_id, slots in free.items():
            if slots <= 0:
                continue
            if best is None or (slots, best) > (free[best], worker_id):
                best = worker_id
        return self.workers[best] if best is not None else None
