"""Plan state as a fold over the plan's events: `apply(state, event) -> commands`.

The state is plain JSON-able data: a plan header plus one record per task, kept in a
mapping the caller provides (a dict in tests and replay, a Faust table in the stream).
Every transition checks the task's current status and attempt, so a duplicated or stale
event is a no-op: the stream is at-least-once, the effects are idempotent.
"""

from __future__ import annotations

import copy
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

# Task statuses.
WAITING = "waiting"        # some dependency not done
READY = "ready"            # may be dispatched
DISPATCHED = "dispatched"  # handed to a worker
FAILED = "failed"          # last attempt failed; waiting for the retry decision
RETRY_WAIT = "retry_wait"  # retry scheduled, not yet due
DONE = "done"
DEAD = "dead"              # dead-lettered; dependents stay held

# Plan statuses.
RUNNING = "running"
PLAN_DONE = "done"
STALLED = "stalled"        # a task is dead; its dependents are held for the PM
REJECTED = "rejected"

REDRIVE = "redrive"  # reason prefix of a TaskRetryScheduled that revives a dead task

Task = dict[str, Any]


@dataclass
class PlanState:
    """One plan: a header dict and its tasks by task id (any mutable mapping)."""

    header: dict[str, Any] = field(default_factory=dict)
    tasks: MutableMapping[str, Task] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        """A deep, comparable copy (used to check replay against live state)."""
        return {"header": copy.deepcopy(self.header),
                "tasks": {k: copy.deepcopy(v) for k, v in sorted(self.tasks.items())}}


@dataclass(frozen=True)
class Command:
    """Something the edge must do because of a transition."""

    kind: str  # release | completed | decide_failure | retry_wait | plan_done | stalled
    plan_id: str
    task_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def _init(state: PlanState, ev: dict[str, Any]) -> list[Command]:
    if state.header:
        return []  # already accepted: a duplicate
    dependents: dict[str, list[str]] = {t["task_id"]: [] for t in ev["tasks"]}
    for spec in ev["tasks"]:
        for dep in spec["depends_on"]:
            dependents[dep].append(spec["task_id"])
    state.header.update({
        "plan_id": ev["plan_id"], "project": ev["project"], "name": ev["name"],
        "status": RUNNING, "accepted_at": ev["accepted_at"], "completed_at": None,
        "total": len(ev["tasks"]), "done": 0, "dead": 0, "cache_hits": 0, "executor_runs": 0,
        "tokens": 0, "cost": 0.0,
        "options": dict(ev.get("options") or {}),
    })
    commands: list[Command] = []
    for spec in ev["tasks"]:
        tid = spec["task_id"]
        ready = not spec["depends_on"]
        state.tasks[tid] = {
            "spec": dict(spec),
            "dependents": sorted(dependents[tid]),
            "remaining": len(spec["depends_on"]),
            "status": READY if ready else WAITING,
            "attempt": 1, "kind": "dev", "dispatch_id": None, "worker_id": None,
            "content_hash": None, "cache_key": None, "cached": False,
            "completed_at": None, "errors": [],
        }
        if ready:
            commands.append(Command("release", ev["plan_id"], tid))
    if not ev["tasks"]:
        state.header["status"] = PLAN_DONE
        state.header["completed_at"] = ev["accepted_at"]
        commands.append(Command("plan_done", ev["plan_id"]))
    return commands


def _dispatched(state: PlanState, ev: dict[str, Any]) -> list[Command]:
    task = state.tasks.get(ev["task_id"])
    if task is None or task["status"] != READY or task["attempt"] != ev["attempt"]:
        return []
    task.update(status=DISPATCHED, dispatch_id=ev["dispatch_id"], worker_id=ev["worker_id"])
    state.tasks[ev["task_id"]] = task
    return []


def _completed(state: PlanState, ev: dict[str, Any]) -> list[Command]:
    tid = ev["task_id"]
    task = state.tasks.get(tid)
    if task is None or task["status"] in (DONE, DEAD):
        return []
    task.update(status=DONE, content_hash=ev["content_hash"], cache_key=ev["cache_key"],
                cached=bool(ev.get("cached")), completed_at=ev["finished_at"],
                worker_id=ev["worker_id"])
    state.tasks[tid] = task
    h = state.header
    h["done"] += 1
    h["cache_hits" if task["cached"] else "executor_runs"] += 1
    h["tokens"] += int(ev.get("tokens") or 0)
    h["cost"] += float(ev.get("cost") or 0.0)
    commands = [Command("completed", h["plan_id"], tid)]
    for dep_id in task["dependents"]:
        dependent = state.tasks[dep_id]
        dependent["remaining"] -= 1
        if dependent["remaining"] == 0 and dependent["status"] == WAITING:
            dependent["status"] = READY
            commands.append(Command("release", h["plan_id"], dep_id))
        state.tasks[dep_id] = dependent
    if h["done"] == h["total"] and h["status"] != PLAN_DONE:
        h["status"] = PLAN_DONE
        h["completed_at"] = ev["finished_at"]
        commands.append(Command("plan_done", h["plan_id"]))
    return commands


def _failed(state: PlanState, ev: dict[str, Any]) -> list[Command]:
    task = state.tasks.get(ev["task_id"])
    if task is None or task["status"] not in (DISPATCHED, READY) \
            or task["attempt"] != ev["attempt"]:
        return []
    task["status"] = FAILED
    task["errors"] = (task["errors"] + [ev["fingerprint"]])[-10:]
    # Kept so a processor that crashes before deciding can decide after its restart.
    task["last_failure"] = {**ev, "output": (ev.get("output") or "")[-2000:] or None}
    state.tasks[ev["task_id"]] = task
    return [Command("decide_failure", state.header["plan_id"], ev["task_id"], dict(ev))]


def _retry_scheduled(state: PlanState, ev: dict[str, Any]) -> list[Command]:
    task = state.tasks.get(ev["task_id"])
    if task is None or ev["attempt"] != task["attempt"] + 1:
        return []
    if task["status"] == DEAD and ev["reason"].startswith(REDRIVE):
        # A redrive from the DLQ: a fresh attempt budget, counted from here.
        task["attempt_base"] = task["attempt"]
        state.header["dead"] -= 1
        if state.header["dead"] == 0:
            state.header["status"] = RUNNING
    elif task["status"] != FAILED:
        return []
    task.update(status=RETRY_WAIT, attempt=ev["attempt"], due_at=ev["due_at"])
    state.tasks[ev["task_id"]] = task
    return [Command("retry_wait", state.header["plan_id"], ev["task_id"],
                    {"due_at": ev["due_at"], "attempt": ev["attempt"]})]


def attempts_used(task: Task) -> int:
    """Attempts counted against the retry budget (a redrive starts a new budget)."""
    return int(task["attempt"]) - int(task.get("attempt_base") or 0)


def _ready(state: PlanState, ev: dict[str, Any]) -> list[Command]:
    """A retry that came due, or a dispatch whose worker vanished with it (lease expired):
    the task may be dispatched again, same attempt."""
    task = state.tasks.get(ev["task_id"])
    if task is None or task["status"] not in (RETRY_WAIT, DISPATCHED) \
            or task["attempt"] != ev["attempt"]:
        return []
    task.update(status=READY, kind=ev["kind"])
    state.tasks[ev["task_id"]] = task
    return [Command("release", state.header["plan_id"], ev["task_id"])]


def _dead(state: PlanState, ev: dict[str, Any]) -> list[Command]:
    task = state.tasks.get(ev["task_id"])
    if task is None or task["status"] in (DONE, DEAD):
        return []
    task["status"] = DEAD
    state.tasks[ev["task_id"]] = task
    state.header["dead"] += 1
    state.header["status"] = STALLED
    return [Command("stalled", state.header["plan_id"], ev["task_id"])]


def _reported(state: PlanState, ev: dict[str, Any]) -> list[Command]:
    state.header["reported"] = True
    return []


def _rejected(state: PlanState, ev: dict[str, Any]) -> list[Command]:
    if not state.header:
        state.header.update({"plan_id": ev["plan_id"], "status": REJECTED,
                             "reason": ev["reason"], "total": 0, "done": 0})
    return []


_HANDLERS = {
    "PlanAccepted": _init,
    "PlanRejected": _rejected,
    "TaskDispatched": _dispatched,
    "TaskCompleted": _completed,
    "TaskFailed": _failed,
    "TaskRetryScheduled": _retry_scheduled,
    "TaskReady": _ready,
    "TaskDeadLettered": _dead,
    "PlanCompleted": _reported,
}


def apply(state: PlanState, event_type: str, event: dict[str, Any]) -> list[Command]:
    """Fold one event into `state` (in place) and return what the edge must do next.

    Events of other types (QA, metrics, PlanCompleted, ...) do not change plan state.
    """
    handler = _HANDLERS.get(event_type)
    if handler is None:
        return []
    if event_type not in ("PlanAccepted", "PlanRejected") and not state.header:
        return []  # an event for a plan we never accepted
    return handler(state, event)


def fold(state: PlanState, event_type: str, event: dict[str, Any]
         ) -> tuple[PlanState, list[Command]]:
    """Pure form of `apply`: returns a new state and the commands; `state` is untouched."""
    new = PlanState(copy.deepcopy(state.header),
                    {k: copy.deepcopy(v) for k, v in state.tasks.items()})
    return new, apply(new, event_type, event)


def ready_tasks(state: PlanState) -> list[str]:
    """Tasks that may be dispatched now (used to rebuild the dispatcher after a restart)."""
    return sorted(t for t, task in state.tasks.items() if task["status"] == READY)


def recovery_commands(header: dict[str, Any], task_id: str, task: Task) -> list[Command]:
    """What a restarted processor must (re)do for one task: commands whose effects may have
    been lost with the crash. Each is idempotent against the log."""
    plan_id = header["plan_id"]
    if task["status"] == READY:
        return [Command("release", plan_id, task_id)]
    if task["status"] == RETRY_WAIT:
        return [Command("retry_wait", plan_id, task_id,
                        {"due_at": task.get("due_at") or 0, "attempt": task["attempt"]})]
    if task["status"] == FAILED and task.get("last_failure"):
        return [Command("decide_failure", plan_id, task_id, dict(task["last_failure"]))]
    return []


def plan_unreported(header: dict[str, Any]) -> bool:
    """Done, but its PlanCompleted never read back: the summary must be sent (again)."""
    return header.get("status") == PLAN_DONE and not header.get("reported")
