"""The read side's state, folded from the logs: plans, live workers, supervisor figures.

Pure: no Kafka, no clock reads (every method that needs the time is given `now_ms`).
Plans are folded with the pipeline's own fold (`agents.scheduling.fold.apply`, seq = the
record's offset), so a plan reads here exactly as `devline status` replays it.

Lifetime. A plan stays while it runs or stalls; done or rejected, it is dropped once it
finished longer than the retention ago (`evict`) or when its `PlanRetired` is read. Event
ids seen (for counting each event once under at-least-once delivery) are kept in a bounded
FIFO. Workers silent for `WORKER_TTL_MS` are dropped; supervisor readings after
`SUPERVISOR_TTL_MS`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from agents.scheduling import fold as F
from agents.scheduling.fixes import state_name
from agents.scheduling.summary import summarize

WORKER_TTL_MS = 15_000
SUPERVISOR_TTL_MS = 60_000
SEEN_MAX = 50_000  # event ids remembered for de-duplication (a few hours of a busy pipeline)
FINISHED = ("done", "rejected")


@dataclass(frozen=True)
class Delta:
    """What one event changed in one plan: sent to `plan:<id>` subscribers."""

    plan_id: str
    type: str
    task: str | None
    status: str | None  # the task's state (status vocabulary) or, for plan events, the plan's
    plan_status: str | None
    seq: int

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "task": self.task, "status": self.status,
                "plan_status": self.plan_status, "seq": self.seq}


@dataclass
class PlanProjection:
    """Every live plan, folded; `fresh` tells the caller an event is counted the first time."""

    retention_ms: int
    plans: dict[str, F.PlanState] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)  # plans changed since the last snapshot
    _seen: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def apply(self, event_type: str, event: dict[str, Any], seq: int) -> Delta | None:
        """Fold one event of `devline.events`; return the delta to publish, if any."""
        pid = event.get("plan_id")
        if not pid:
            return None
        if event_type == "PlanRetired":
            gone = self.plans.pop(str(pid), None)
            self.dirty.discard(str(pid))
            return Delta(str(pid), event_type, None, None, "retired", seq) if gone else None
        state = self.plans.get(str(pid))
        if state is None:
            if event_type not in ("PlanAccepted", "PlanRejected"):
                return None  # evicted (or never accepted): nothing to fold it into
            state = self.plans[str(pid)] = F.PlanState()
        F.apply(state, event_type, event, seq)
        self.dirty.add(str(pid))
        if not state.header:
            self.plans.pop(str(pid), None)
            self.dirty.discard(str(pid))
            return None
        tid = event.get("task_id")
        task = state.task(str(tid)) if tid else None
        status = state_name(dict(task)) if task is not None else None
        return Delta(str(pid), event_type, str(tid) if tid else None, status,
                     str(state.header.get("status")), seq)

    def fresh(self, event: dict[str, Any]) -> bool:
        """True the first time an event id is seen (events without an id always count)."""
        eid = event.get("event_id")
        if not eid:
            return True
        if eid in self._seen:
            return False
        self._seen[str(eid)] = None
        if len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        return True

    def evict(self, now_ms: int) -> list[str]:
        """Drop plans done or rejected longer than the retention ago; return their ids."""
        gone = [pid for pid, st in self.plans.items()
                if st.header.get("status") in FINISHED
                and st.header.get("completed_at") is not None
                and now_ms - int(st.header["completed_at"]) >= self.retention_ms]
        for pid in gone:
            del self.plans[pid]
            self.dirty.discard(pid)
        return gone

    def task_states(self) -> dict[str, int]:
        """Tasks of the live plans by the state `devline status` shows."""
        counts: dict[str, int] = {}
        for task in self._tasks():
            name = state_name(task)
            counts[name] = counts.get(name, 0) + 1
        return counts

    def plan_statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for st in self.plans.values():
            name = str(st.header.get("status"))
            counts[name] = counts.get(name, 0) + 1
        return counts

    def summary(self, plan_id: str) -> dict[str, Any] | None:
        """One plan as `devline status --json` prints it, or None."""
        st = self.plans.get(plan_id)
        if st is None or not st.header:
            return None
        return {**summarize(plan_id, st),
                "task_states": {tid: state_name(t) for tid, t in sorted(st.tasks.items())}}

    def _tasks(self) -> Iterator[dict[str, Any]]:
        for st in self.plans.values():
            yield from st.tasks.values()


@dataclass
class WorkerView:
    """Live workers from heartbeats, and the supervisors' desired pool size."""

    workers: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> heartbeat + seen
    desired: dict[str, tuple[float, int]] = field(default_factory=dict)  # supervisor -> (v, at)
    backlog: tuple[float, int] | None = None

    def heartbeat(self, hb: dict[str, Any], now_ms: int) -> bool:
        """Record a heartbeat; True when the set of workers or a worker's state changed."""
        wid = str(hb["worker_id"])
        if hb.get("state") == "probe":
            return False  # a processor's link probe, not a worker
        if hb.get("state") == "stopped":
            return self.workers.pop(wid, None) is not None
        old = self.workers.get(wid)
        self.workers[wid] = {"worker_id": wid, "host": hb.get("host"), "state": hb.get("state"),
                             "capacity": hb.get("capacity"),
                             "running": len(hb.get("running") or ()), "seen": now_ms}
        return old is None or old["state"] != hb.get("state") or \
            old["running"] != len(hb.get("running") or ())

    def point(self, point: dict[str, Any], now_ms: int) -> None:
        """Take the supervisor's and the scheduler's figures from a MetricPoint."""
        name = point.get("name")
        if name == "replicas_desired":
            who = str((point.get("labels") or {}).get("supervisor") or point.get("source"))
            self.desired[who] = (float(point["value"]), now_ms)
        elif name == "backlog" and point.get("source") == "scheduler":
            self.backlog = (float(point["value"]), now_ms)

    def expire(self, now_ms: int) -> list[str]:
        """Forget workers silent for 15 s and old supervisor readings; return gone workers."""
        gone = [w for w, hb in self.workers.items() if now_ms - int(hb["seen"]) > WORKER_TTL_MS]
        for w in gone:
            del self.workers[w]
        for who in [k for k, (_, at) in self.desired.items() if now_ms - at > SUPERVISOR_TTL_MS]:
            del self.desired[who]
        return gone

    def current(self) -> int:
        return len(self.workers)

    def desired_total(self) -> float | None:
        return sum(v for v, _ in self.desired.values()) if self.desired else None

    def snapshot(self) -> dict[str, Any]:
        return {"current": self.current(), "desired": self.desired_total(),
                "workers": [{k: v for k, v in hb.items() if k != "seen"}
                            for _, hb in sorted(self.workers.items())]}
