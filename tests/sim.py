"""A whole pipeline in memory: the real processor edge on fake ports, a simulated worker
and an external producer, driven step by step with a movable clock. A `CrashPlan` kills
the processor at chosen effect boundaries; it restarts from its committed offset with the
tables it had written, exactly as a Faust worker does after SIGKILL.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from agents.executors.config import Executors
from agents.planning import accept, plan_record
from agents.resilience.clock import FakeClock
from agents.scheduling.stale import stale_reason
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.edge.fake import Crash, CrashPlan, FakeLog, FakeStore, FakeTable
from streams.edge.ports import Ports, RawRecord
from streams.edge.processor import Processor
from streams.emit import Emitter, headers_for
from streams.sink import Materializer

START = 1_700_000_000.0
CODEC = Codec()  # stateless in single-object mode: one per test session


async def _instant(_: float) -> None:
    return None


class SimWorker:
    """One worker: takes items in order, drops duplicates and stale items, runs the demo
    behaviour (`simulate.fail_first`), reports the result straight into the log."""

    def __init__(self, sim: Sim, worker_id: str = "w1", capacity: int = 2) -> None:
        self.sim = sim
        self.worker_id = worker_id
        self.capacity = capacity
        self.pos = 0
        self.seen: set[str] = set()
        self.runs: Counter[tuple[str, str, int]] = Counter()
        self.skipped: list[str] = []

    def heartbeat(self) -> None:
        self.sim.external("WorkerHeartbeat", {
            "worker_id": self.worker_id, "host": "sim", "pid": 1, "state": "idle",
            "capacity": self.capacity, "running": [], "partitions": [0],
            "at": self.sim.ports.now_ms()}, T.WORKERS, self.worker_id)

    def step(self) -> bool:
        work = self.sim.log.topics[T.WORK_DEV]
        if self.pos >= len(work):
            return False
        rec = work[self.pos]
        self.pos += 1
        _, item = self.sim.codec.decode(rec.value or b"")
        if item["dispatch_id"] in self.seen:
            self.skipped.append(f"duplicate {item['dispatch_id']}")
            return True
        why = stale_reason(item, self.later_events(item), [])
        if why:
            self.skipped.append(why)
            return True
        self.seen.add(item["dispatch_id"])
        key = (item["plan_id"], item["task_id"], item["attempt"])
        self.runs[key] += 1
        sim = item.get("simulate") or {}
        now = self.sim.ports.now_ms()
        common = {"plan_id": item["plan_id"], "task_id": item["task_id"], "path": item["path"],
                  "attempt": item["attempt"], "worker_id": self.worker_id,
                  "dispatch_id": item["dispatch_id"], "executor": item["executor"],
                  "started_at": now, "finished_at": now}
        if item["attempt"] <= int(sim.get("fail_first") or 0):
            self.sim.external("TaskFailed", {
                **common, "event_id": f"f-{item['dispatch_id']}", "error": "simulated failure",
                "error_type": "simulated", "retryable": True, "fingerprint": "fp-sim",
                "output": None, "retry_after_s": None})
            return True
        content = item["content"] if item["content"] is not None else f"# {item['path']}\n"
        data = content.encode()
        self.sim.external("TaskCompleted", {
            **common, "event_id": f"c-{item['dispatch_id']}", "cache_key": item["cache_key"],
            "content": content, "content_hash": hashlib.sha256(data).hexdigest(),
            "size": len(data), "cached": False, "tokens": None, "cost": None,
            "project": item["project"]})
        return True

    def later_events(self, item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events = self.sim.log.topics[T.EVENTS]
        start = item.get("dispatch_offset") or 0
        out = []
        for rec in events[start:]:
            if rec.header("task-id") != item["task_id"] or rec.key != item["plan_id"].encode():
                continue
            out.append(self.sim.codec.decode(rec.value or b""))
        return out


class Sim:
    def __init__(self, crash_at: Iterable[int] = (), *, commit_every: int = 3,
                 max_attempts: int = 3, acks: bool = False, follow: bool = False) -> None:
        """`acks`: sends are acknowledged, so the dispatcher folds its own dispatches when
        they are (`Processor.fold_ahead`); `follow`: a follower hands the processor every
        new event before the stream does, as `streams.leadership` does
        (`Processor.fold_followed`)."""
        self.crash = CrashPlan(crash_at)
        self.follow = follow
        self.log = FakeLog(self.crash, acks=acks)
        self.clock = FakeClock(START)
        self.settings = Settings(max_attempts=max_attempts)
        self.codec = CODEC
        self.store = FakeStore(self.crash)
        self.tables = {n: FakeTable(n, self.crash) for n in ("plans", "tasks", "cache")}
        self.ports = Ports(self.settings, self.codec,
                           Emitter(self.settings, self.codec, self.log.send), self.store,
                           clock=self.clock.now, sleep=_instant, **self.tables)
        self.commit_every = commit_every
        self.committed = 0
        self.pos = 0
        self.hb_pos = 0
        self.board_pos = 0
        self.follow_pos = 0
        self.ids = itertools.count()
        self.worker = SimWorker(self)
        self.restarts = 0
        self.proc = self._processor()
        self.started = False

    def _processor(self) -> Processor:
        return Processor(self.ports, executors=Executors({}), processor_id="sim",
                         new_id=lambda: f"d{next(self.ids)}")

    # -- the outside world --------------------------------------------------------------
    def external(self, event_type: str, record: dict[str, Any], topic: str = T.EVENTS,
                 key: str | None = None) -> RawRecord:
        """A record from another process (worker, planner, user): never crashes ours."""
        k = key if key is not None else record["plan_id"]
        return self.log.append(topic, k.encode(), self.codec.encode(event_type, record),
                               headers_for(event_type, record))

    def submit(self, doc: dict[str, Any]) -> str:
        record = plan_record(doc)
        accepted = accept(record, accepted_at=self.ports.now_ms())
        self.external("PlanAccepted", accepted)
        return str(record["plan_id"])

    # -- driving --------------------------------------------------------------------------
    async def start(self) -> None:
        events = self.log.topics[T.EVENTS]
        await self.proc.on_assigned({0: len(events)}, {0: self.committed})
        self.proc.leader.elected(len(self.log.topics[T.BOARD]))  # the only processor
        self.started = True

    async def _restarted(self) -> None:
        """Restart; a crash while restarting (in recovery) is one more restart."""
        while True:
            try:
                return await self.restart()
            except Crash:
                continue

    async def restart(self) -> None:
        """The processor died: memory gone, tables as written, reading from the commit."""
        self.restarts += 1
        self.proc = self._processor()
        self.pos = self.committed
        self.board_pos = 0  # a new process reads the board from its beginning
        self.follow_pos = len(self.log.topics[T.EVENTS])  # ... and the events from now
        await self.start()

    async def step(self) -> None:
        if not self.started:
            await self.start()
        workers = self.log.topics[T.WORKERS]
        while self.hb_pos < len(workers):
            rec = workers[self.hb_pos]
            self.hb_pos += 1
            await self.proc.on_heartbeat_record(rec)
        board = self.log.topics[T.BOARD]
        while self.board_pos < len(board):
            self.board_pos += 1
            await self.proc.on_board_record(board[self.board_pos - 1])
        events = self.log.topics[T.EVENTS]
        if self.follow and self.follow_pos < len(events):
            new, self.follow_pos = events[self.follow_pos:], len(events)
            await self.proc.fold_followed(0, new)
        if self.pos < len(events):
            await self.proc.on_event_record(events[self.pos])
            self.pos += 1
            if self.pos - self.committed >= self.commit_every:
                self.crash.step("commit")
                self.committed = self.pos
            await self.proc.pump()
            return
        if self.worker.step():
            return
        # Idle: time passes; heartbeats, leases, timers, the pump.
        self.clock.advance(1.0)
        self.worker.heartbeat()
        await self.proc.tick()
        await self.proc.fire_timers()
        await self.proc.pump()

    async def run(self, until: Callable[[Sim], bool], max_steps: int = 20_000) -> None:
        for _ in range(max_steps):
            if until(self):
                return
            try:
                await self.step()
            except Crash:
                await self._restarted()
        raise AssertionError(f"not done after {max_steps} steps: {self.describe()}")

    # -- reading the result --------------------------------------------------------------
    def plan(self, plan_id: str) -> dict[str, Any]:
        return dict.get(self.tables["plans"], plan_id) or {}

    def reported(self, *plan_ids: str) -> bool:
        return all(self.plan(p).get("reported") for p in plan_ids) \
            and self.pos >= len(self.log.topics[T.EVENTS])

    def describe(self) -> str:
        tasks = {k: (v["status"], v["attempt"]) for k, v in dict.items(self.tables["tasks"])}
        return f"plans {dict(self.tables['plans'])}, tasks {tasks}"

    def events(self, event_type: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for rec in self.log.topics[T.EVENTS]:
            et, ev = self.codec.decode(rec.value or b"")
            if event_type is None or et == event_type:
                out.append((et, ev))
        return out

    def outcome(self) -> dict[str, Any]:
        """What must not depend on where (or whether) the processor crashed."""
        tasks = {k: {f: v[f] for f in ("status", "attempt", "attempt_base", "content_hash",
                                       "cached", "cache_key", "errors", "kind", "size")}
                 for k, v in dict.items(self.tables["tasks"])}
        plans = {k: {f: v.get(f) for f in ("status", "total", "done", "dead", "cache_hits",
                                           "executor_runs", "reported")}
                 for k, v in dict.items(self.tables["plans"])}
        letters = {next(v for k, v in r.headers if k == "dlq-id")
                   for r in self.log.topics[T.DLQ]}
        escalations = {self.codec.decode(r.value or b"")[1]["event_id"]
                       for r in self.log.topics[T.ESCALATIONS]}
        # A cache entry's `at` (last use, for its expiry) is when it happened: not compared.
        cache = {k: {f: v for f, v in e.items() if f != "at"}
                 for k, e in dict.items(self.tables["cache"])}
        return {"tasks": tasks, "plans": plans, "cache": cache,
                "artifacts": dict(self.store.blobs), "runs": dict(self.worker.runs),
                "dead_letters": len(letters), "escalations": len(escalations)}

    async def files(self, workspace: Path) -> dict[str, str]:
        """Materialise every TaskCompleted of the log (as the sink would) and hash the tree."""
        sink = Materializer(workspace, self.store, sleep=_instant)
        for _, ev in self.events("TaskCompleted"):
            await sink.materialize(ev)
        return tree_hashes(workspace)


def tree_hashes(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root`."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
