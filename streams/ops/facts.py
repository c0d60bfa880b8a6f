"""The facts the ops rules read, folded from the plan events, the worker heartbeats and the
ops decisions themselves. Pure: records in, an `OpsView` out; time is an argument.

- Plans: each plan's events folded with `agents.scheduling.fold.apply` (as `replay` does);
  a task is waiting while the fold has it READY, since the timestamp of the event that
  made it so. Critical-path tasks come from PlanAccepted. A plan that is over (done,
  rejected, retired) is forgotten: the rules only look at waiting work.
- Pool: the newest heartbeat of each worker heard within `worker_timeout_s`.
- Decisions: acted `reprioritise` ones change the priorities the view shows (as the
  dispatcher applies them); acted `pause_executor` / `resume_executor` the paused set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.ops import Action, Decision, ExecutorFacts, OpsView, PlanFacts, PoolFacts, WaitingTask
from agents.scheduling import fold as F
from agents.scheduling.model import PlanStatus, TaskStatus

Key = tuple[str, str]
OVER = (PlanStatus.DONE, PlanStatus.REJECTED)
BUSY_STATES = ("starting", "draining", "stopped", "probe")  # no free slots to count


@dataclass
class Facts:
    worker_timeout_s: float = 15.0
    plans: dict[str, F.PlanState] = field(default_factory=dict)
    critical: dict[str, frozenset[str]] = field(default_factory=dict)
    ready_since: dict[Key, int] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)  # newest heartbeat
    priorities: dict[Key, float] = field(default_factory=dict)        # ops overrides
    plan_priority: dict[str, float] = field(default_factory=dict)
    paused: dict[str, int] = field(default_factory=dict)              # executor -> since

    # -- inputs ----------------------------------------------------------------------
    def on_event(self, event_type: str, value: Mapping[str, Any], offset: int, at_ms: int
                 ) -> None:
        """Fold one devline.events record (`offset` its log position, `at_ms` its time)."""
        plan_id = value.get("plan_id")
        if not plan_id:
            return
        if event_type == "PlanRetired":
            self._forget(plan_id)
            return
        if event_type == "PlanAccepted":
            self.critical[plan_id] = frozenset(value.get("critical_path") or ())
        state = self.plans.setdefault(plan_id, F.PlanState())
        F.apply(state, event_type, dict(value), offset)
        if not state.header or state.header.get("status") in OVER:
            self._forget(plan_id)
            return
        for task_id, task in state.tasks.items():
            key = (plan_id, task_id)
            if task["status"] == TaskStatus.READY:
                self.ready_since.setdefault(key, at_ms)
            else:
                self.ready_since.pop(key, None)

    def _forget(self, plan_id: str) -> None:
        self.plans.pop(plan_id, None)
        self.critical.pop(plan_id, None)
        self.plan_priority.pop(plan_id, None)
        self.ready_since = {k: v for k, v in self.ready_since.items() if k[0] != plan_id}
        self.priorities = {k: v for k, v in self.priorities.items() if k[0] != plan_id}

    def on_heartbeat(self, hb: Mapping[str, Any]) -> None:
        if hb.get("state") == "probe":
            return  # a processor's link probe, not a worker
        if hb.get("state") == "stopped":
            self.workers.pop(str(hb["worker_id"]), None)
            return
        known = self.workers.get(str(hb["worker_id"]))
        if known is None or int(known["at"]) <= int(hb["at"]):
            self.workers[str(hb["worker_id"])] = dict(hb)

    def on_decision(self, d: Decision) -> None:
        """What an acted decision changed (a dry-run one changed nothing)."""
        if not d.acted:
            return
        match d.action:
            case Action.REPRIORITISE:
                if d.plan_id is None or "priority" not in d.params:
                    return
                priority = float(d.params["priority"])
                if d.params.get("scope") == "plan":
                    self.plan_priority[d.plan_id] = priority
                elif "task_id" in d.params:
                    self.priorities[(d.plan_id, d.params["task_id"])] = priority
            case Action.PAUSE_EXECUTOR:
                self.paused.setdefault(d.params.get("executor") or d.target, d.at)
            case Action.RESUME_EXECUTOR:
                self.paused.pop(d.params.get("executor") or d.target, None)
            case Action.SCALE | Action.ROLLBACK:
                return

    # -- the view ----------------------------------------------------------------------
    def priority(self, plan_id: str, task_id: str) -> float:
        """A task's priority as the dispatcher ranks it (ops decisions applied)."""
        override = self.priorities.get((plan_id, task_id))
        if override is not None:
            return override
        task = self.plans[plan_id].task(task_id) if plan_id in self.plans else None
        base = float(task["spec"]["priority"]) if task is not None else 0.0
        return base + self.plan_priority.get(plan_id, 0.0)

    def pool(self, now_ms: int) -> PoolFacts:
        live = [hb for hb in self.workers.values()
                if now_ms - int(hb["at"]) <= self.worker_timeout_s * 1000]
        idle = sum(max(int(hb["capacity"]) - len(hb.get("running") or ()), 0)
                   for hb in live if hb["state"] not in BUSY_STATES)
        running = []
        for hb in live:
            for name in hb.get("running") or ():
                plan_id, _, task_id = str(name).partition("/")
                if plan_id in self.plans:
                    running.append(self.priority(plan_id, task_id))
        return PoolFacts(workers=len(live), idle=idle,
                         min_running_priority=min(running) if running else None)

    def view(self, now_ms: int) -> OpsView:
        """The plans, pool and executors as of `now_ms` (no aggregates: the caller's)."""
        plans = {}
        for plan_id, state in self.plans.items():
            facts = PlanFacts(plan_id, self.plan_priority.get(plan_id, 0.0))
            critical = self.critical.get(plan_id, frozenset())
            for task_id, task in state.tasks.items():
                if task["status"] != TaskStatus.READY:
                    continue
                facts.waiting[task_id] = WaitingTask(
                    task_id, self.ready_since.get((plan_id, task_id), now_ms),
                    self.priority(plan_id, task_id), task_id in critical)
            plans[plan_id] = facts
        executors = {name: ExecutorFacts(name, since) for name, since in self.paused.items()}
        return OpsView(plans=plans, pool=self.pool(now_ms), executors=executors)
