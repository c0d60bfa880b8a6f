"""Integration rounds in the pure fold: every file verified -> testing; shards reported ->
done, or the files the failures point at reopened as fix tasks; after their fixes the
failed tests, then the full suite; flaky tests never gate; a shard that could not run
stalls the plan with the reason; redelivered events change nothing."""

from __future__ import annotations

import copy
from typing import Any

from agents.scheduling import fixes
from agents.scheduling import integration as I
from agents.scheduling.fold import DONE, FAILED, PLAN_DONE, PlanState, apply
from agents.scheduling.model import Cmd

PATHS = ["calc/ops.py", "calc/util.py", "tests/test_ops.py"]


def accepted(options: dict[str, str] | None = None) -> dict[str, Any]:
    deps = {"calc/ops.py": [], "calc/util.py": [], "tests/test_ops.py": ["calc/ops.py"]}
    return {"plan_id": "p1", "project": "demo", "name": "demo", "accepted_at": 0,
            "critical_path": [], "levels": [], "inferred_edges": 0, "options": options or {},
            "tasks": [{"task_id": p, "path": p, "language": "python", "description": "",
                       "depends_on": deps[p], "content": None, "cost": 1.0, "priority": 1.0,
                       "level": 0, "executor": "demo", "simulate": None} for p in PATHS]}


def finish_file(state: PlanState, path: str, attempt: int = 1) -> list[Any]:
    apply(state, "TaskDispatched", {
        "event_id": f"d{path}{attempt}", "plan_id": "p1", "task_id": path, "path": path,
        "kind": "dev", "attempt": attempt, "worker_id": "w", "partition": 0,
        "dispatch_id": f"x{path}{attempt}", "dispatched_at": 1})
    return apply(state, "TaskCompleted", {
        "event_id": f"c{path}{attempt}", "plan_id": "p1", "task_id": path, "path": path,
        "attempt": attempt, "worker_id": "w", "dispatch_id": f"x{path}{attempt}",
        "executor": "demo", "cache_key": "k", "content": "", "content_hash": f"h{attempt}",
        "size": 1, "cached": False, "started_at": 1, "finished_at": 10 * attempt,
        "qa": {"chain": "default", "passed": True, "duration_ms": 5, "fingerprint": "",
               "checks": []}})


def started(state: PlanState, tests: list[list[str]]) -> dict[str, Any]:
    integ = state.header["integration"]
    shards = [{"index": i, "tests": t, "expected_s": 1.0} for i, t in enumerate(tests)]
    return {"event_id": f"s{integ['round']}", "plan_id": "p1",
            "run_id": I.run_id("p1", integ["round"], shards), "round": integ["round"],
            "scope": integ["scope"], "project": "demo", "files_ref": "m",
            "tests_total": sum(map(len, tests)), "shards": shards, "at": 100}


def result(run: dict[str, Any], shard: int, *, failures: list[dict[str, Any]] = (),  # type: ignore[assignment]
           flaky: list[str] = (), error: str | None = None) -> dict[str, Any]:  # type: ignore[assignment]
    tests = run["shards"][shard]["tests"]
    return {"event_id": f"r{run['run_id']}{shard}", "plan_id": "p1", "run_id": run["run_id"],
            "shard": shard, "shards": len(run["shards"]), "passed": not failures,
            "failed_tests": [f["test_id"] for f in failures], "implicated_files": [],
            "duration_ms": 500, "at": 200, "round": run["round"], "tests": len(tests),
            "flaky_tests": list(flaky), "failures": list(failures),
            "durations": {t: 0.1 for t in tests}, "worker_id": f"t{shard}",
            "command": "python -m pytest", "error": error}


FAIL = {"test_id": "tests/test_ops.py::test_add", "message": "assert 3 == 4",
        "output": "calc/ops.py:2: AssertionError", "files": ["calc/ops.py",
                                                            "tests/test_ops.py"]}


def all_verified() -> PlanState:
    state = PlanState()
    apply(state, "PlanAccepted", accepted())
    assert state.header["tests"] == 1
    finish_file(state, "calc/ops.py")
    finish_file(state, "calc/util.py")
    cmds = finish_file(state, "tests/test_ops.py")
    assert state.header["status"] == I.TESTING
    assert [c.kind for c in cmds if c.kind == Cmd.INTEGRATE] == [Cmd.INTEGRATE]
    return state


def test_a_clean_run_finishes_the_plan_and_flaky_tests_do_not_gate() -> None:
    state = all_verified()
    run = started(state, [["tests/test_ops.py::test_add"], ["tests/test_ops.py::test_sub"]])
    cmds = apply(state, "IntegrationStarted", run)
    assert [c.kind for c in cmds] == [Cmd.SEND_SHARDS]
    apply(state, "IntegrationResult", result(run, 0))
    assert state.header["status"] == I.TESTING  # one shard still out
    cmds = apply(state, "IntegrationResult", result(run, 1, flaky=["tests/test_ops.py::t"]))
    assert state.header["status"] == PLAN_DONE and state.header["completed_at"] == 200
    assert Cmd.PLAN_DONE in {c.kind for c in cmds}
    assert state.header["integration"]["history"][-1]["flaky"] == ["tests/test_ops.py::t"]


def test_a_failure_reopens_its_file_then_failed_tests_then_the_full_suite() -> None:
    state = all_verified()
    run = started(state, [["tests/test_ops.py::test_add", "tests/test_ops.py::test_sub"]])
    apply(state, "IntegrationStarted", run)
    cmds = apply(state, "IntegrationResult", result(run, 0, failures=[FAIL]))
    assert [(c.kind, c.task_id) for c in cmds if c.kind == Cmd.DECIDE_FAILURE] == [
        (Cmd.DECIDE_FAILURE, "calc/ops.py")]
    h = state.header
    assert h["status"] == "running" and h["done"] == 2
    task = state.task("calc/ops.py")
    assert task is not None and task["status"] == FAILED
    assert task["last_failure"]["error_type"] == "integration"
    assert "assert 3 == 4" in task["last_failure"]["error"]
    decision = fixes.decide(dict(task))
    assert decision.fix
    # The fix: scheduled, due, dispatched, verified -> round 2 runs the failed test only.
    apply(state, "TaskRetryScheduled", {
        "event_id": "fix", "plan_id": "p1", "task_id": "calc/ops.py", "path": "calc/ops.py",
        "attempt": 2, "delay_ms": 0, "due_at": 11, "reason": decision.reason, "kind": "fix"})
    apply(state, "TaskReady", {"event_id": "due", "plan_id": "p1", "task_id": "calc/ops.py",
                               "path": "calc/ops.py", "kind": "fix", "attempt": 2,
                               "priority": 1.0, "cache_key": "", "ready_at": 11})
    brief = fixes.brief(dict(state.task("calc/ops.py") or {}))
    assert brief is not None and brief["check"] == "pytest (integration)"
    assert "tests/test_ops.py::test_add" in brief["output"]
    test_file = state.task("tests/test_ops.py")
    assert test_file is not None and test_file["remaining"] == 0  # not counted twice
    finish_file(state, "calc/ops.py", attempt=2)
    integ = state.header["integration"]
    assert state.header["status"] == I.TESTING and integ["round"] == 2
    assert integ["scope"] == "failed" and integ["failed_tests"] == [FAIL["test_id"]]
    run2 = started(state, [[FAIL["test_id"]]])
    apply(state, "IntegrationStarted", run2)
    cmds = apply(state, "IntegrationResult", result(run2, 0))
    integ = state.header["integration"]
    assert state.header["status"] == I.TESTING and integ["round"] == 3
    assert integ["scope"] == "full" and Cmd.INTEGRATE in {c.kind for c in cmds}
    run3 = started(state, [["tests/test_ops.py::test_add", "tests/test_ops.py::test_sub"]])
    apply(state, "IntegrationStarted", run3)
    apply(state, "IntegrationResult", result(run3, 0))
    assert state.header["status"] == PLAN_DONE and state.header["done"] == 3


def test_a_shard_that_could_not_run_stalls_the_plan_with_the_reason() -> None:
    state = all_verified()
    run = started(state, [["tests/test_ops.py::test_add"]])
    apply(state, "IntegrationStarted", run)
    apply(state, "IntegrationResult", result(run, 0, error="collection failed: ImportError"))
    assert state.header["status"] == "stalled"
    assert "ImportError" in state.header["reason"]


def test_redelivered_and_stale_events_change_nothing() -> None:
    state = all_verified()
    run = started(state, [["a"], ["b"]])
    apply(state, "IntegrationStarted", run, seq=100)
    other = dict(run, run_id="another", event_id="x")  # a recomputed assignment: ignored
    assert apply(state, "IntegrationStarted", other, seq=101) == []
    first = result(run, 0)
    apply(state, "IntegrationResult", first, seq=102)
    before = state.snapshot()
    again = apply(state, "IntegrationResult", first, seq=102)
    assert state.snapshot() == before and all(not c.fresh for c in again)
    apply(state, "IntegrationResult", dict(first, event_id="dup"), seq=103)
    assert state.header["integration"]["shards"] == {"0": "passed", "1": None}


def test_a_crash_between_header_and_task_writes_reopens_on_redelivery() -> None:
    state = all_verified()
    run = started(state, [["t"]])
    apply(state, "IntegrationStarted", run, seq=100)
    tasks_before = {k: copy.deepcopy(v) for k, v in state.tasks.items()}
    apply(state, "IntegrationResult", result(run, 0, failures=[FAIL]), seq=101)
    # The header was written, the task write was lost: redelivery finishes the job.
    state.tasks["calc/ops.py"] = tasks_before["calc/ops.py"]
    cmds = apply(state, "IntegrationResult", result(run, 0, failures=[FAIL]), seq=101)
    task = state.task("calc/ops.py")
    assert task is not None and task["status"] == FAILED
    assert (Cmd.DECIDE_FAILURE, "calc/ops.py") in {(c.kind, c.task_id) for c in cmds}
    assert state.header["done"] == 2  # counted once


def test_integration_off_or_no_tests_finishes_at_the_last_file() -> None:
    state = PlanState()
    apply(state, "PlanAccepted", accepted({"integration": "off"}))
    for path in PATHS:
        finish_file(state, path)
    assert state.header["status"] == PLAN_DONE
    task = state.task("calc/ops.py")
    assert task is not None and task["status"] == DONE
