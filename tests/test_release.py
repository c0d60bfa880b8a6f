"""When dependents start (`release: verified` by default, `release: written` speculative)
and when they run again (the interface they were built against changed), in the fold."""

from __future__ import annotations

import copy
from typing import Any

from agents.scheduling.fold import DISPATCHED, DONE, PLAN_DONE, READY, WAITING, PlanState, apply
from agents.scheduling.model import Cmd

# a <- b <- c   (b imports a, c imports b)
DEPS = {"a.py": [], "b.py": ["a.py"], "c.py": ["b.py"]}


def accepted(release: str) -> dict[str, Any]:
    return {"plan_id": "p1", "project": "demo", "name": "demo", "accepted_at": 0,
            "critical_path": [], "levels": [], "inferred_edges": 0,
            "options": {"release": release},
            "tasks": [{"task_id": t, "path": t, "language": "python", "description": "",
                       "depends_on": d, "content": None, "cost": 1.0, "priority": 1.0,
                       "level": 0, "executor": "demo", "simulate": None}
                      for t, d in DEPS.items()]}


def dispatch(state: PlanState, t: str, attempt: int = 1) -> None:
    apply(state, "TaskDispatched", {
        "event_id": f"d{t}{attempt}", "plan_id": "p1", "task_id": t, "path": t, "kind": "dev",
        "attempt": attempt, "worker_id": "w", "partition": 0, "dispatch_id": f"x{t}{attempt}",
        "dispatched_at": 1})


def complete(state: PlanState, t: str, attempt: int, iface: str, seq: int | None = None
             ) -> list[Any]:
    return apply(state, "TaskCompleted", {
        "event_id": f"c{t}{attempt}", "plan_id": "p1", "task_id": t, "path": t,
        "attempt": attempt, "worker_id": "w", "dispatch_id": f"x{t}{attempt}",
        "executor": "demo", "cache_key": "k", "content": "", "content_hash": f"{t}-v{attempt}",
        "size": 1, "cached": False, "started_at": 1, "finished_at": 2,
        "interface_hash": iface}, seq)


def qa_fail(state: PlanState, t: str, attempt: int, iface: str) -> list[Any]:
    return apply(state, "TaskFailed", {
        "event_id": f"f{t}{attempt}", "plan_id": "p1", "task_id": t, "path": t,
        "attempt": attempt, "worker_id": "w", "dispatch_id": f"x{t}{attempt}",
        "executor": "demo", "error": "ruff: F821", "error_type": "qa", "retryable": True,
        "fingerprint": f"fp{attempt}", "output": "x", "retry_after_s": None, "started_at": 1,
        "finished_at": 2, "content_hash": f"{t}-v{attempt}", "size": 1, "qa": None,
        "interface_hash": iface})


def fix(state: PlanState, t: str, attempt: int) -> None:
    apply(state, "TaskRetryScheduled", {
        "event_id": f"r{t}{attempt}", "plan_id": "p1", "task_id": t, "path": t,
        "attempt": attempt, "delay_ms": 0, "due_at": 2, "reason": "fix", "kind": "fix"})
    apply(state, "TaskReady", {"event_id": f"due{t}{attempt}", "plan_id": "p1", "task_id": t,
                               "path": t, "kind": "fix", "attempt": attempt, "priority": 1.0,
                               "cache_key": "", "ready_at": 3})
    dispatch(state, t, attempt)


def status(state: PlanState, t: str) -> str:
    task = state.task(t)
    assert task is not None
    return str(task["status"])


def released(cmds: list[Any]) -> set[str]:
    return {c.task_id for c in cmds if c.kind == Cmd.RELEASE}


def test_by_default_dependents_wait_for_the_verified_version() -> None:
    state = PlanState()
    apply(state, "PlanAccepted", accepted("verified"))
    dispatch(state, "a.py")
    assert released(qa_fail(state, "a.py", 1, "I1")) == set()
    assert status(state, "b.py") == WAITING
    fix(state, "a.py", 2)
    assert released(complete(state, "a.py", 2, "I1")) == {"b.py"}


def test_written_releases_dependents_at_once_and_a_same_interface_fix_costs_nothing() -> None:
    state = PlanState()
    apply(state, "PlanAccepted", accepted("written"))
    dispatch(state, "a.py")
    assert released(qa_fail(state, "a.py", 1, "I1")) == {"b.py"}
    a = state.task("a.py")
    assert a is not None and a["content_hash"] == "a.py-v1"  # what b is built against
    dispatch(state, "b.py")
    complete(state, "b.py", 1, "J1")
    fix(state, "a.py", 2)
    cmds = complete(state, "a.py", 2, "I1")  # the fix kept the interface
    assert "b.py" not in released(cmds) and status(state, "b.py") == DONE
    assert state.header["done"] == 2 and state.header.get("reruns", 0) == 0
    dispatch(state, "c.py")
    complete(state, "c.py", 1, "K1")
    assert state.header["status"] == PLAN_DONE


def test_an_interface_change_reruns_done_and_running_dependents_then_cascades() -> None:
    state = PlanState()
    apply(state, "PlanAccepted", accepted("written"))
    dispatch(state, "a.py")
    qa_fail(state, "a.py", 1, "I1")
    dispatch(state, "b.py")
    complete(state, "b.py", 1, "J1")  # built against a's v1
    dispatch(state, "c.py")           # running against b v1
    fix(state, "a.py", 2)
    cmds = complete(state, "a.py", 2, "I2")  # the fix changed a's interface
    assert released(cmds) == {"b.py"}
    b = state.task("b.py")
    assert b is not None and b["status"] == READY and b["attempt"] == 2
    assert b["attempt_base"] == 1
    assert state.header["done"] == 1 and state.header["reruns"] == 1
    assert status(state, "c.py") == DISPATCHED  # c is not a's dependent: untouched yet
    # b runs again and its interface changes too: c (running against b v1) must rerun.
    dispatch(state, "b.py", 2)
    complete(state, "b.py", 2, "J2")
    c = state.task("c.py")
    assert c is not None and c["stale_seq"] is not None
    cmds = complete(state, "c.py", 1, "K1")  # c's stale result: taken as "run again"
    assert released(cmds) == {"c.py"} and status(state, "c.py") == READY
    dispatch(state, "c.py", 2)
    complete(state, "c.py", 2, "K1")
    assert state.header["status"] == PLAN_DONE and state.header["done"] == 3


def test_a_redelivered_completion_reruns_and_counts_once() -> None:
    state = PlanState()
    apply(state, "PlanAccepted", accepted("written"))
    dispatch(state, "a.py")
    qa_fail(state, "a.py", 1, "I1")
    dispatch(state, "b.py")
    complete(state, "b.py", 1, "J1")
    fix(state, "a.py", 2)
    b_before = copy.deepcopy(state.task("b.py"))
    complete(state, "a.py", 2, "I2", seq=500)
    header = copy.deepcopy(state.header)
    state.tasks["b.py"] = b_before  # the crash lost b's write, the header's was kept
    cmds = complete(state, "a.py", 2, "I2", seq=500)
    assert state.header == header and released(cmds) == {"b.py"}
    b = state.task("b.py")
    assert b is not None and b["status"] == READY and b["attempt"] == 2
    again = complete(state, "a.py", 2, "I2", seq=500)
    assert state.header == header and all(not c.fresh for c in again)
