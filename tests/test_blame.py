"""A test file whose own tests fail in a module it imports: the module is fixed (reopened
if verified), the test file waits and then runs again; in the pure fold."""

from __future__ import annotations

import copy
from typing import Any

from agents.scheduling import fixes
from agents.scheduling.fold import DONE, FAILED, PLAN_DONE, READY, WAITING, PlanState, apply
from agents.scheduling.model import Cmd

DEPS = {"calc/ops.py": [], "tests/test_ops.py": ["calc/ops.py"]}


def accepted() -> dict[str, Any]:
    return {"plan_id": "p1", "project": "demo", "name": "demo", "accepted_at": 0,
            "critical_path": [], "levels": [], "inferred_edges": 0,
            "options": {"integration": "off"},
            "tasks": [{"task_id": t, "path": t, "language": "python", "description": "",
                       "depends_on": d, "content": None, "cost": 1.0, "priority": 1.0,
                       "level": 0, "executor": "demo", "simulate": None}
                      for t, d in DEPS.items()]}


def dispatch(state: PlanState, t: str, attempt: int, kind: str = "dev") -> None:
    apply(state, "TaskDispatched", {
        "event_id": f"d{t}{attempt}", "plan_id": "p1", "task_id": t, "path": t, "kind": kind,
        "attempt": attempt, "worker_id": "w", "partition": 0, "dispatch_id": f"x{t}{attempt}",
        "dispatched_at": 1})


def complete(state: PlanState, t: str, attempt: int) -> list[Any]:
    return apply(state, "TaskCompleted", {
        "event_id": f"c{t}{attempt}", "plan_id": "p1", "task_id": t, "path": t,
        "attempt": attempt, "worker_id": "w", "dispatch_id": f"x{t}{attempt}",
        "executor": "demo", "cache_key": "k", "content": "", "content_hash": f"{t}-v{attempt}",
        "size": 1, "cached": False, "started_at": 1, "finished_at": 2, "interface_hash": "I"})


def failing_tests_event(attempt: int = 1) -> dict[str, Any]:
    pytest_check = {"name": "pytest", "status": "fail", "blocking": True,
                    "command": "python -m pytest tests/test_ops.py", "duration_ms": 300,
                    "findings": 1, "introduced": 1, "reason": "",
                    "output": "calc/ops.py:2: IndexError", "lines": [],
                    "attributed": ["calc/ops.py"]}
    return {"event_id": f"f{attempt}", "plan_id": "p1", "task_id": "tests/test_ops.py",
            "path": "tests/test_ops.py", "attempt": attempt, "worker_id": "w",
            "dispatch_id": f"xtests/test_ops.py{attempt}", "executor": "demo",
            "error": "pytest: tests/test_ops.py::test_add failed", "error_type": "qa",
            "retryable": True, "fingerprint": "fpT", "output": "calc/ops.py:2: IndexError",
            "retry_after_s": None, "started_at": 1, "finished_at": 2,
            "content_hash": "t-v1", "size": 1, "interface_hash": "T",
            "qa": {"chain": "default", "passed": False, "duration_ms": 300,
                   "fingerprint": "fpT", "checks": [pytest_check]}}


def status(state: PlanState, t: str) -> str:
    task = state.task(t)
    assert task is not None
    return str(task["status"])


def blamed_state(seq: int | None = None) -> tuple[PlanState, list[Any]]:
    state = PlanState()
    apply(state, "PlanAccepted", accepted())
    dispatch(state, "calc/ops.py", 1)
    complete(state, "calc/ops.py", 1)
    dispatch(state, "tests/test_ops.py", 1)
    cmds = apply(state, "TaskFailed", failing_tests_event(), seq)
    return state, cmds


def test_the_module_is_reopened_and_fixed_and_the_test_file_runs_again() -> None:
    state, cmds = blamed_state()
    assert [(c.kind, c.task_id) for c in cmds] == [(Cmd.DECIDE_FAILURE, "calc/ops.py")]
    assert status(state, "tests/test_ops.py") == WAITING
    ops = state.task("calc/ops.py")
    assert ops is not None and ops["status"] == FAILED
    assert ops["last_failure"]["content_hash"] == "calc/ops.py-v1"  # fix the verified one
    assert state.header["done"] == 0
    decision = fixes.decide(dict(ops))
    assert decision.fix
    apply(state, "TaskRetryScheduled", {
        "event_id": "fix", "plan_id": "p1", "task_id": "calc/ops.py", "path": "calc/ops.py",
        "attempt": 2, "delay_ms": 0, "due_at": 2, "reason": decision.reason, "kind": "fix"})
    apply(state, "TaskReady", {"event_id": "due", "plan_id": "p1", "task_id": "calc/ops.py",
                               "path": "calc/ops.py", "kind": "fix", "attempt": 2,
                               "priority": 1.0, "cache_key": "", "ready_at": 3})
    brief = fixes.brief(dict(state.task("calc/ops.py") or {}))
    assert brief is not None and brief["check"] == "pytest"
    assert "IndexError" in brief["output"] and brief["base_hash"] == "calc/ops.py-v1"
    dispatch(state, "calc/ops.py", 2, "fix")
    cmds = complete(state, "calc/ops.py", 2)
    assert (Cmd.RELEASE, "tests/test_ops.py") in {(c.kind, c.task_id) for c in cmds}
    test = state.task("tests/test_ops.py")
    assert test is not None and test["status"] == READY and test["attempt"] == 2
    assert test["attempt_base"] == 1 and test.get("fix_count", 0) == 0  # not its fault
    dispatch(state, "tests/test_ops.py", 2)
    complete(state, "tests/test_ops.py", 2)
    assert state.header["status"] == PLAN_DONE and state.header["done"] == 2


def test_a_crash_between_the_writes_is_finished_by_redelivery() -> None:
    state = PlanState()
    apply(state, "PlanAccepted", accepted())
    dispatch(state, "calc/ops.py", 1)
    complete(state, "calc/ops.py", 1)
    dispatch(state, "tests/test_ops.py", 1)
    ops_before = copy.deepcopy(state.task("calc/ops.py"))
    apply(state, "TaskFailed", failing_tests_event(), 100)
    header = copy.deepcopy(state.header)
    state.tasks["calc/ops.py"] = ops_before  # the module's write was lost
    cmds = apply(state, "TaskFailed", failing_tests_event(), 100)
    assert state.header == header and state.header["done"] == 0  # counted once
    assert status(state, "calc/ops.py") == FAILED
    assert [(c.kind, c.task_id) for c in cmds] == [(Cmd.DECIDE_FAILURE, "calc/ops.py")]


def test_a_failure_in_the_test_itself_is_fixed_in_the_test() -> None:
    state = PlanState()
    apply(state, "PlanAccepted", accepted())
    dispatch(state, "calc/ops.py", 1)
    complete(state, "calc/ops.py", 1)
    dispatch(state, "tests/test_ops.py", 1)
    own = failing_tests_event()
    own["qa"]["checks"][0]["attributed"] = []
    cmds = apply(state, "TaskFailed", own)
    assert [(c.kind, c.task_id) for c in cmds] == [(Cmd.DECIDE_FAILURE, "tests/test_ops.py")]
    assert status(state, "calc/ops.py") == DONE
