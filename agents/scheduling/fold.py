"""Plan state as a fold over the plan's events: `apply(state, event, seq) -> commands`.

The state is plain JSON-able data (`agents.scheduling.model`): a plan header plus one record
per task, kept in a mapping the caller provides (a dict in tests and replay, a Faust table
in the stream).

Two rules make it safe under at-least-once delivery and crashes:

- **Every record remembers the log position (`seq`) of the last event applied to it**, and
  an event changes a record only if the record is older than the event. A crash can leave
  any subset of one event's table writes behind; when the event is delivered again, the
  records it already changed are skipped and the rest are brought up to date, so nothing
  is counted twice or lost. (quix-streams stamps changelog writes with the input offset for
  the same reason.) A duplicate at a later position is stopped by the status and attempt
  checks every transition makes.
- **Commands are derived from the state the event leaves behind, not from the transition.**
  A redelivered event yields the same effects as the first delivery, so an effect a crash
  cut off is redone; each effect is idempotent. Never "the table already says DONE, so the
  effect is skipped".
"""

from __future__ import annotations

import copy
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, cast

from agents.integration.discovery import is_pytest_module
from agents.scheduling import blame as B
from agents.scheduling import canary as C
from agents.scheduling import fixes
from agents.scheduling import gate as G
from agents.scheduling import integration as I
from agents.scheduling import release as R
from agents.scheduling.base import (  # the vocabulary, re-exported as F.DONE etc.
    DEAD,
    DISPATCHED,
    DONE,
    ERRORS_KEPT,
    FAILED,
    OUTPUT_KEPT,
    PLAN_DONE,
    READY,
    REDRIVE,
    REJECTED,
    RETRY_WAIT,
    RUNNING,
    STALLED,
    WAITING,
    count_checks,
    newer,
    plan_done_command,
    qa_summary,
)
from agents.scheduling.model import (
    Cmd,
    Command,
    PlanHeader,
    TaskRecord,
    TaskSpec,
)

Task = TaskRecord


@dataclass
class PlanState:
    """One plan: its header and its tasks by task id (any mutable mapping)."""

    header: dict[str, Any] = field(default_factory=dict)
    tasks: MutableMapping[str, Any] = field(default_factory=dict)
    clock: int = 0  # last position used when events come without one (tests, tools)

    def snapshot(self) -> dict[str, Any]:
        """A deep, comparable copy (used to check replay against live state)."""
        return {"header": copy.deepcopy(self.header),
                "tasks": {k: copy.deepcopy(v) for k, v in sorted(self.tasks.items())}}

    def task(self, task_id: str) -> TaskRecord | None:
        value = self.tasks.get(task_id)
        return cast("TaskRecord | None", value)


def new_task(spec: TaskSpec, dependents: list[str], seq: int) -> TaskRecord:
    ready = not spec["depends_on"]
    return {
        "spec": spec, "dependents": dependents, "remaining": len(spec["depends_on"]),
        "status": READY if ready else WAITING, "attempt": 1, "attempt_base": 0, "kind": "dev",
        "dispatch_id": None, "worker_id": None, "partition": None, "content_hash": None,
        "size": 0, "cache_key": None, "cached": False, "completed_at": None, "errors": [],
        "last_failure": None, "due_at": None, "seq": seq,
        "fixes": [], "fix_base": None, "fix_count": 0, "qa": None,
    }


def _spec(raw: dict[str, Any]) -> TaskSpec:
    return {"task_id": raw["task_id"], "path": raw["path"], "language": raw.get("language"),
            "description": raw.get("description") or "", "depends_on": list(raw["depends_on"]),
            "content": raw.get("content"), "cost": float(raw.get("cost") or 0.0),
            "priority": float(raw.get("priority") or 0.0), "level": int(raw.get("level") or 0),
            "executor": raw["executor"], "simulate": raw.get("simulate"),
            "brief": raw.get("brief")}


# -- handlers: (state, event, seq) -> commands ------------------------------------------
def _accepted(state: PlanState, ev: dict[str, Any], seq: int) -> list[Command]:
    h = state.header
    if not h or (h.get("status") == REJECTED and newer(h, seq)):
        h.clear()  # a rejected plan id may be submitted again
        header: PlanHeader = {
            "plan_id": ev["plan_id"], "project": ev["project"], "name": ev["name"],
            "status": RUNNING, "accepted_at": ev["accepted_at"], "completed_at": None,
            "total": len(ev["tasks"]), "done": 0, "dead": 0, "cache_hits": 0,
            "executor_runs": 0, "tokens": 0, "cost": 0.0,
            "options": dict(ev.get("options") or {}), "reported": False, "seq": seq,
        }
        h.update(header)
        h["accepted_seq"] = seq
        h["tests"] = sum(1 for t in ev["tasks"] if is_pytest_module(t["path"]))
        if not ev["tasks"]:
            h.update(status=PLAN_DONE, completed_at=ev["accepted_at"])
    if h.get("accepted_seq") == seq:
        # This is the event that created the plan: create whatever tasks a crash cut off.
        dependents: dict[str, list[str]] = {t["task_id"]: [] for t in ev["tasks"]}
        for raw in ev["tasks"]:
            for dep in raw["depends_on"]:
                dependents[dep].append(raw["task_id"])
        for raw in ev["tasks"]:
            if state.tasks.get(raw["task_id"]) is None:
                state.tasks[raw["task_id"]] = new_task(
                    _spec(raw), sorted(dependents[raw["task_id"]]), seq)
    if h.get("status") == REJECTED:
        return []
    commands = [Command(Cmd.RELEASE, h["plan_id"], tid, fresh=h.get("accepted_seq") == seq)
                for tid, task in state.tasks.items() if task["status"] == READY]
    return commands + plan_done_command(h, h.get("accepted_seq") == seq)


def _rejected(state: PlanState, ev: dict[str, Any], seq: int) -> list[Command]:
    if not state.header:
        state.header.update({"plan_id": ev["plan_id"], "status": REJECTED,
                             "reason": ev["reason"], "total": 0, "done": 0, "seq": seq,
                             "completed_at": ev.get("rejected_at")})
    return []


def retirable(header: dict[str, Any], now_ms: int, retention_ms: int) -> bool:
    """A plan that finished (done or rejected) longer than `retention_ms` ago. A stalled
    plan is not finished: it waits for the PM's decision, however long that takes."""
    finished = header.get("completed_at")
    if finished is None or header.get("status") not in (PLAN_DONE, REJECTED):
        return False
    reported = header.get("status") == REJECTED or bool(header.get("reported"))
    return reported and now_ms - int(finished) >= retention_ms


def _retired(state: PlanState, ev: dict[str, Any], seq: int) -> list[Command]:
    """The plan leaves the tables: its tasks first, its header last, so an event
    delivered again after a crash halfway finds the header and finishes the job."""
    h = state.header
    if h.get("status") not in (PLAN_DONE, REJECTED) or h.get("completed_at") != \
            ev["finished_at"]:
        return []  # redriven or re-accepted since the decision: not the plan it was about
    for tid in list(state.tasks):
        del state.tasks[tid]
    h.clear()
    return []


def _dispatched(state: PlanState, ev: dict[str, Any], seq: int) -> list[Command]:
    tid = ev["task_id"]
    task = state.task(tid)
    if task is None:
        return []
    fresh = False
    if newer(task, seq) and task["status"] == READY and task["attempt"] == ev["attempt"]:
        task.update({"status": DISPATCHED, "dispatch_id": ev["dispatch_id"],
                     "worker_id": ev["worker_id"], "partition": ev["partition"], "seq": seq})
        state.tasks[tid] = task
        fresh = True
    if task["status"] == DISPATCHED and task["dispatch_id"] == ev["dispatch_id"]:
        return [Command(Cmd.SEND_WORK, state.header["plan_id"], tid, fresh=fresh)]
    return []


def _completed(state: PlanState, ev: dict[str, Any], seq: int) -> list[Command]:
    tid = ev["task_id"]
    task = state.task(tid)
    if task is None or task["status"] == DEAD:
        return []
    h = state.header
    fresh = False
    if R.stale_result(task, seq):
        # Ran against a dependency version that has since been replaced: run it again.
        R.rerun(task, seq)
        state.tasks[tid] = task
        return [Command(Cmd.RELEASE, h["plan_id"], tid)]
    if newer(task, seq) and task["status"] != DONE:
        R.before_done(task, ev, seq)
        task.update({"status": DONE, "content_hash": ev["content_hash"],
                     "size": int(ev.get("size") or 0), "cache_key": ev["cache_key"],
                     "cached": bool(ev.get("cached")), "completed_at": ev["finished_at"],
                     "worker_id": ev["worker_id"], "seq": seq,
                     "qa": qa_summary(ev.get("qa")) or task.get("qa")})
        state.tasks[tid] = task
        fresh = True
    if task["status"] != DONE:
        return []
    by_this_event = task["seq"] == seq  # this event is the one that finished the task
    reruns = R.dependents_to_rerun(state, task, seq) if by_this_event else []
    if by_this_event and newer(h, seq):
        h["done"] += 1 - sum(1 for d in reruns if d[1] == DONE)
        h["cache_hits" if task["cached"] else "executor_runs"] += 1
        h["tokens"] += int(ev.get("tokens") or 0)
        h["cost"] += float(ev.get("cost") or 0.0)
        h["reruns"] = int(h.get("reruns") or 0) + len(reruns)
        count_checks(h, ev.get("qa"))
        if h["done"] == h["total"] and h["status"] not in (PLAN_DONE, I.TESTING):
            if I.wanted(h):  # every file verified: the plan's tests run next
                integ = h.get("integration") or {}
                I.begin(h, "failed" if integ.get("failed_tests") else "full",
                        int(ev["finished_at"]))
            else:
                h["status"] = PLAN_DONE
                h["completed_at"] = ev["finished_at"]
        h["seq"] = seq
    commands = [Command(Cmd.STORE, h["plan_id"], tid, fresh=fresh)]
    commands += R.apply_reruns(state, reruns, seq, fresh)
    if by_this_event:  # test files that waited for this module to be fixed run again
        commands += [Command(Cmd.RELEASE, h["plan_id"], t, fresh=fresh)
                     for t in B.unblock(state, task, tid, seq)]
    return (commands + _count_for_dependents(state, task, seq, fresh) + I.commands(h, fresh)
            + plan_done_command(h, fresh))


def _count_for_dependents(state: PlanState, task: Any, seq: int, fresh: bool
                          ) -> list[Command]:
    """The event that made the task's content available (its verification, or with
    `release: written` its first written version) counts it for its dependents, once."""
    h = state.header
    commands = []
    counted_here = task.get("counted_seq") == seq
    for dep_id in task["dependents"]:
        dependent = state.task(dep_id)
        if dependent is None:
            continue
        if counted_here and newer(dependent, seq) and dependent["status"] == WAITING:
            dependent["remaining"] -= 1
            if dependent["remaining"] == 0:
                dependent["status"] = READY
            dependent["seq"] = seq
            state.tasks[dep_id] = dependent
        if dependent["status"] == READY:
            commands.append(Command(Cmd.RELEASE, h["plan_id"], dep_id, fresh=fresh))
    return commands


def _failed(state: PlanState, ev: dict[str, Any], seq: int) -> list[Command]:
    tid = ev["task_id"]
    task = state.task(tid)
    if task is None:
        return []
    h = state.header
    fresh = False
    superseded = bool(ev.get("dispatch_id") and task["dispatch_id"]
                      and ev["dispatch_id"] != task["dispatch_id"])
    if (newer(task, seq) and task["status"] in (DISPATCHED, READY) and not superseded
            and task["attempt"] == ev["attempt"]):
        task["status"] = FAILED
        task["errors"] = (task["errors"] + [ev["fingerprint"]])[-ERRORS_KEPT:]
        # Kept so a processor that crashes before deciding can decide after its restart;
        # a QA failure keeps the evidence its fix task carries.
        kept = fixes.EVIDENCE_MAX if fixes.is_qa_failure(ev) else OUTPUT_KEPT
        task["last_failure"] = {**ev, "output": (ev.get("output") or "")[-kept:] or None}
        culprit = B.blamed(state, tid, ev)
        if culprit is not None:  # its tests fail in a module it imports: fix that one
            B.block(task, culprit, seq)
        elif fixes.is_qa_failure(ev):
            fixes.record_failure(cast("dict[str, Any]", task), ev)
            R.written(task, ev, seq, h.get("options") or {})
        task["stale_seq"] = None  # the next attempt gets the current dependencies anyway
        task["seq"] = seq
        state.tasks[tid] = task
        fresh = True
    blocked_here = task["seq"] == seq and task["status"] == WAITING and task.get("blocked_on")
    target = state.task(str(task.get("blocked_on"))) if blocked_here else None
    reopen = target is not None and (target.get("reopened_seq") == seq or (
        newer(target, seq) and target["status"] == DONE))
    if task["seq"] == seq and fixes.is_qa_failure(ev) and newer(h, seq):
        count_checks(h, ev.get("qa"))
        h["executor_runs"] += 1  # the executor ran; its file failed the checks
        if reopen:
            h["done"] -= 1
        h["seq"] = seq
    commands = []
    if target is not None:
        return G.blame_target(state, tid, task, str(task["blocked_on"]), target, ev, seq, fresh)
    last = task["last_failure"] or {}
    if task["status"] == FAILED and last.get("attempt") == ev["attempt"]:
        commands.append(Command(Cmd.DECIDE_FAILURE, h["plan_id"], tid, fresh=fresh))
    if task.get("counted_seq") == seq:  # released as written: its dependents may start
        commands += _count_for_dependents(state, task, seq, fresh)
    return commands


def _retry_scheduled(state: PlanState, ev: dict[str, Any], seq: int) -> list[Command]:
    tid = ev["task_id"]
    task = state.task(tid)
    if task is None:
        return []
    h = state.header
    fresh = False
    if newer(task, seq) and ev["attempt"] == task["attempt"] + 1:
        revive = task["status"] == DEAD and ev["reason"].startswith(REDRIVE)
        if revive or task["status"] == FAILED:
            if revive:
                # A redrive: a fresh attempt budget and a clean no-progress history.
                task["attempt_base"] = task["attempt"]
                task["errors"] = []
            elif ev.get("kind") == "fix":
                # A fix is a new task for the executor's retry budget.
                task["attempt_base"] = task["attempt"]
            if ev.get("kind"):
                task["kind"] = ev["kind"]
            task.update({"status": RETRY_WAIT, "attempt": ev["attempt"], "due_at": ev["due_at"],
                         "seq": seq})
            state.tasks[tid] = task
            fresh = True
    if task["seq"] == seq and ev.get("kind") == "fix" and newer(h, seq):
        h["fixes"] = int(h.get("fixes") or 0) + 1
        h["seq"] = seq
    revived_here = (task["seq"] == seq and ev["reason"].startswith(REDRIVE)
                    and task["attempt_base"] == ev["attempt"] - 1)
    if revived_here and newer(h, seq):
        h["dead"] -= 1
        if h["dead"] == 0:
            h["status"] = RUNNING
        h["seq"] = seq
    if task["status"] == RETRY_WAIT and task["attempt"] == ev["attempt"]:
        return [Command(Cmd.ARM_TIMER, h["plan_id"], tid, fresh=fresh)]
    return []


def _ready(state: PlanState, ev: dict[str, Any], seq: int) -> list[Command]:
    """A retry that came due, or a dispatch whose worker vanished with it (lease expired):
    the task may be dispatched again, same attempt."""
    tid = ev["task_id"]
    task = state.task(tid)
    if task is None:
        return []
    fresh = False
    if (newer(task, seq) and task["status"] in (RETRY_WAIT, DISPATCHED)
            and task["attempt"] == ev["attempt"]):
        task.update({"status": READY, "kind": ev["kind"], "seq": seq, "stale_seq": None})
        state.tasks[tid] = task
        fresh = True
    if task["status"] == READY and task["attempt"] == ev["attempt"]:
        return [Command(Cmd.RELEASE, state.header["plan_id"], tid, fresh=fresh)]
    return []


def _dead(state: PlanState, ev: dict[str, Any], seq: int) -> list[Command]:
    tid = ev["task_id"]
    task = state.task(tid)
    if task is None:
        return []
    h = state.header
    fresh = False
    if newer(task, seq) and task["status"] not in (DONE, DEAD):
        task.update({"status": DEAD, "seq": seq})
        state.tasks[tid] = task
        fresh = True
    if task["status"] != DEAD:
        return []
    if task["seq"] == seq and newer(h, seq):
        h["dead"] += 1
        h["status"] = STALLED
        h["seq"] = seq
    return [Command(Cmd.DEAD_LETTER, h["plan_id"], tid, fresh=fresh,
                    data={"reason": ev["reason"], "attempts": ev["attempts"]})]


def _reported(state: PlanState, ev: dict[str, Any], seq: int) -> list[Command]:
    state.header["reported"] = True
    return []


def redrive_refusal(task: TaskRecord | None, ev: dict[str, Any]) -> str | None:
    """Why a redrive request cannot be carried out, or None when it can."""
    if task is None:
        return f"no task {ev['task_id']} in plan {ev['plan_id']}"
    if task["status"] != DEAD:
        return f"task {ev['task_id']} is {task['status']}, not dead"
    if ev.get("attempt") is not None and ev["attempt"] != task["attempt"]:
        return (f"stale request (attempt {ev['attempt']}): task {ev['task_id']} died again "
                f"at attempt {task['attempt']}")
    return None


def _redrive_requested(state: PlanState, ev: dict[str, Any], seq: int) -> list[Command]:
    task = state.task(ev["task_id"])
    if redrive_refusal(task, ev) is not None:
        return []
    return [Command(Cmd.REDRIVE, state.header["plan_id"], ev["task_id"], data=dict(ev))]


Handler = Callable[[PlanState, dict[str, Any], int], list[Command]]
HANDLERS: dict[str, Handler] = {
    "PlanAccepted": _accepted,
    "PlanRejected": _rejected,
    "TaskDispatched": _dispatched,
    "TaskCompleted": _completed,
    "TaskFailed": _failed,
    "TaskRetryScheduled": _retry_scheduled,
    "TaskReady": _ready,
    "TaskDeadLettered": _dead,
    "TaskRedriveRequested": _redrive_requested,
    "PlanCompleted": _reported,
    "PlanRetired": _retired,
    "IntegrationStarted": G.integration_started,
    "IntegrationResult": G.integration_result,
    "RolloutFixRequested": C.rollout_fix_requested,
}


def apply(state: PlanState, event_type: str, event: dict[str, Any], seq: int | None = None
          ) -> list[Command]:
    """Fold one event into `state` (in place) and return what the edge must do next.

    `seq` is the event's position in the log (its offset: every event of one plan is in one
    partition). Without one, the next position after the last one used is taken. Events of
    other types (QA, metrics, ...) do not change plan state.
    """
    if seq is None:
        seq = state.clock = state.clock + 1
    else:
        state.clock = max(state.clock, seq)
    handler = HANDLERS.get(event_type)
    if handler is None:
        return []
    if event_type not in ("PlanAccepted", "PlanRejected", "PlanRetired") and (
            not state.header or state.header.get("status") == REJECTED):
        return []  # an event for a plan we never accepted
    return handler(state, event, seq)


def fold(state: PlanState, event_type: str, event: dict[str, Any], seq: int | None = None
         ) -> tuple[PlanState, list[Command]]:
    """Pure form of `apply`: returns a new state and the commands; `state` is untouched."""
    new = PlanState(copy.deepcopy(state.header),
                    {k: copy.deepcopy(v) for k, v in state.tasks.items()}, state.clock)
    return new, apply(new, event_type, event, seq)


def attempts_used(task: Any) -> int:
    """Attempts counted against the retry budget (a redrive starts a new budget)."""
    return int(task["attempt"]) - int(task.get("attempt_base") or 0)


def ready_tasks(state: PlanState) -> list[str]:
    """Tasks that may be dispatched now."""
    return sorted(t for t, task in state.tasks.items() if task["status"] == READY)


def recovery_commands(header: dict[str, Any], task_id: str, task: Any) -> list[Command]:
    """What a restarted processor must (re)do for one task that no pending event will redo:
    queue it, arm its timer, decide its failure. Each is idempotent against the log."""
    plan_id = header["plan_id"]
    status = task["status"]
    if status == READY:
        return [Command(Cmd.RELEASE, plan_id, task_id, fresh=False)]
    if status == RETRY_WAIT:
        return [Command(Cmd.ARM_TIMER, plan_id, task_id, fresh=False)]
    if status == FAILED and task.get("last_failure"):
        return [Command(Cmd.DECIDE_FAILURE, plan_id, task_id, fresh=False)]
    return []


def plan_recovery(header: dict[str, Any]) -> list[Command]:
    """What a restarted processor must redo for a plan as a whole: its integration run
    planned (a run already planned is on the test work topic and needs nothing)."""
    return I.commands(header, fresh=False)


def plan_unreported(header: dict[str, Any]) -> bool:
    """Done, but its PlanCompleted never read back: the summary must be sent (again)."""
    return header.get("status") == PLAN_DONE and not header.get("reported")
