"""Property tests of the plan-state fold: any DAG, any completion order."""

from __future__ import annotations

from typing import Any

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.scheduling.fold import DONE, PLAN_DONE, STALLED, PlanState, apply, fold
from agents.scheduling.model import Cmd


@st.composite
def dags(draw: st.DrawFn) -> nx.DiGraph:
    n = draw(st.integers(1, 25))
    g = nx.DiGraph()
    g.add_nodes_from(f"t{i}" for i in range(n))
    for i in range(n):
        for j in range(i):
            if draw(st.booleans()) and draw(st.booleans()):
                g.add_edge(f"t{i}", f"t{j}")  # t_i imports t_j (j < i): acyclic
    return g


def accepted(g: nx.DiGraph, plan_id: str = "p1") -> dict[str, Any]:
    return {
        "plan_id": plan_id, "project": "demo", "name": "demo", "accepted_at": 0,
        "critical_path": [], "levels": [], "inferred_edges": 0, "options": {},
        "tasks": [
            {"task_id": t, "path": f"{t}.py", "language": "python", "description": "",
             "depends_on": sorted(g.successors(t)), "content": None, "cost": 1.0,
             "priority": 1.0, "level": 0, "executor": "demo", "simulate": None}
            for t in sorted(g)
        ],
    }


def dispatched(t: str, attempt: int = 1) -> dict[str, Any]:
    return {"event_id": f"d-{t}-{attempt}", "plan_id": "p1", "task_id": t, "path": f"{t}.py",
            "kind": "dev", "attempt": attempt, "worker_id": "w1", "partition": 0,
            "dispatch_id": f"x-{t}-{attempt}", "dispatched_at": 1}


def completed(t: str, at: int, attempt: int = 1) -> dict[str, Any]:
    return {"event_id": f"c-{t}", "plan_id": "p1", "task_id": t, "path": f"{t}.py",
            "attempt": attempt, "worker_id": "w1", "dispatch_id": f"x-{t}-{attempt}",
            "executor": "demo", "cache_key": f"k-{t}", "content": "", "content_hash": f"h-{t}",
            "size": 0, "cached": False, "started_at": at, "finished_at": at}


@settings(max_examples=200, deadline=None)
@given(dags(), st.randoms(use_true_random=False), st.floats(0, 0.5))
def test_any_completion_order_dispatches_each_task_once_after_its_deps(
    g: nx.DiGraph, rnd: Any, dup_rate: float
) -> None:
    state = PlanState()
    log: list[tuple[str, dict[str, Any]]] = []

    def emit(kind: str, ev: dict[str, Any]) -> list[Any]:
        log.append((kind, ev))
        cmds = apply(state, kind, ev)
        if rnd.random() < dup_rate:  # at-least-once delivery: a duplicate changes nothing
            log.append((kind, ev))
            before = state.snapshot()
            again = apply(state, kind, ev)
            assert state.snapshot() == before
            # ... and asks for no more than the first delivery did (idempotent effects)
            assert {(c.kind, c.task_id) for c in again} <= {(c.kind, c.task_id) for c in cmds}
            assert all(not c.fresh for c in again)
        return cmds

    released = [c.task_id for c in emit("PlanAccepted", accepted(g))
                if c.kind == Cmd.RELEASE]
    running: list[str] = []
    dispatch_count: dict[str, int] = {}
    done_at: dict[str, int] = {}
    clock = 0
    while released or running:
        clock += 1
        if released and (not running or rnd.random() < 0.5):
            t = released.pop(rnd.randrange(len(released)))
            assert all(d in done_at for d in g.successors(t)), "released before its deps"
            emit("TaskDispatched", dispatched(t))
            dispatch_count[t] = dispatch_count.get(t, 0) + 1
            running.append(t)
        else:
            t = running.pop(rnd.randrange(len(running)))
            done_at[t] = clock
            cmds = emit("TaskCompleted", completed(t, clock))
            released += [c.task_id for c in cmds if c.kind == Cmd.RELEASE and c.fresh]
    assert dispatch_count == {t: 1 for t in g}
    assert state.header["status"] == PLAN_DONE
    assert all(task["status"] == DONE for task in state.tasks.values())
    # Replay: folding the same log from nothing rebuilds exactly the same state.
    replayed = PlanState()
    for kind, ev in log:
        apply(replayed, kind, ev)
    assert replayed.snapshot() == state.snapshot()
    again, _ = fold(replayed, "TaskCompleted", completed(next(iter(g)), 0))
    assert again.snapshot() == replayed.snapshot()  # fold is the pure form of apply


@settings(max_examples=80, deadline=None)
@given(dags(), st.data())
def test_a_redelivered_event_completes_writes_a_crash_cut_off(g: nx.DiGraph, data: Any) -> None:
    """An event's writes land in any subset before a crash; applying it again at the same
    position brings every record up to date without counting anything twice."""
    clean, cut = PlanState(), PlanState()
    seq = 0
    order = list(nx.topological_sort(g.reverse()))  # dependencies first

    def both(kind: str, ev: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        apply(clean, kind, ev, seq)
        trial = PlanState(dict(cut.header), {k: dict(v) for k, v in cut.tasks.items()},
                          cut.clock)
        apply(trial, kind, ev, seq)
        # the crash: keep a random subset of the records the event changed
        for tid, task in trial.tasks.items():
            if task != cut.tasks.get(tid) and data.draw(st.booleans()):
                cut.tasks[tid] = task
        if trial.header != cut.header and data.draw(st.booleans()):
            cut.header = dict(trial.header)
        apply(cut, kind, ev, seq)  # redelivered
        assert cut.snapshot() == clean.snapshot()

    both("PlanAccepted", accepted(g))
    for i, t in enumerate(order):
        both("TaskDispatched", dispatched(t))
        both("TaskCompleted", completed(t, i + 1))
    assert clean.header["status"] == PLAN_DONE and clean.header["done"] == len(g)


def test_failure_retry_and_dead_letter_hold_dependents() -> None:
    g = nx.DiGraph([("b", "a")])
    state = PlanState()
    apply(state, "PlanAccepted", accepted(g))
    apply(state, "TaskDispatched", dispatched("a"))
    failed = {"event_id": "f1", "plan_id": "p1", "task_id": "a", "path": "a.py", "attempt": 1,
              "worker_id": "w1", "dispatch_id": "x-a-1", "executor": "demo", "error": "boom",
              "error_type": "crash", "retryable": True, "fingerprint": "fp", "output": None,
              "retry_after_s": None, "started_at": 1, "finished_at": 2}
    cmds = apply(state, "TaskFailed", failed)
    assert [c.kind for c in cmds] == [Cmd.DECIDE_FAILURE]
    again = apply(state, "TaskFailed", failed)  # duplicate: same (idempotent) decision asked
    assert [(c.kind, c.fresh) for c in again] == [(Cmd.DECIDE_FAILURE, False)]
    apply(state, "TaskRetryScheduled", {"event_id": "r", "plan_id": "p1", "task_id": "a",
                                        "path": "a.py", "attempt": 2, "delay_ms": 10,
                                        "due_at": 12, "reason": "boom"})
    assert state.tasks["a"]["status"] == "retry_wait" and state.tasks["a"]["attempt"] == 2
    cmds = apply(state, "TaskReady", {"event_id": "y", "plan_id": "p1", "task_id": "a",
                                      "path": "a.py", "kind": "dev", "attempt": 2,
                                      "priority": 1.0, "cache_key": "", "ready_at": 12})
    assert [c.kind for c in cmds] == [Cmd.RELEASE]
    apply(state, "TaskDispatched", dispatched("a", 2))
    apply(state, "TaskFailed", {**failed, "event_id": "f2", "attempt": 2})
    cmds = apply(state, "TaskDeadLettered", {"event_id": "z", "plan_id": "p1", "task_id": "a",
                                             "path": "a.py", "attempts": 2, "reason": "boom",
                                             "fingerprint": "fp", "at": 3})
    assert [c.kind for c in cmds] == [Cmd.DEAD_LETTER]
    assert state.header["status"] == STALLED
    assert state.tasks["b"]["status"] == "waiting"  # held, not lost


def test_stale_dispatch_and_unknown_plan_are_ignored() -> None:
    state = PlanState()
    assert apply(state, "TaskCompleted", completed("a", 1)) == []
    assert state.header == {}
    apply(state, "PlanAccepted", accepted(nx.DiGraph([("b", "a")])))
    apply(state, "TaskDispatched", dispatched("b"))  # b is not ready: ignored
    assert state.tasks["b"]["status"] == "waiting"


def test_redrive_revives_a_dead_task_with_a_fresh_budget() -> None:
    from agents.scheduling.fold import REDRIVE, attempts_used

    g = nx.DiGraph([("b", "a")])
    state = PlanState()
    apply(state, "PlanAccepted", accepted(g))
    apply(state, "TaskDispatched", dispatched("a"))
    apply(state, "TaskFailed", {"event_id": "f1", "plan_id": "p1", "task_id": "a", "path": "a.py",
                                "attempt": 1, "worker_id": "w", "dispatch_id": "x",
                                "executor": "demo",
                                "error": "e", "error_type": "t", "retryable": False,
                                "fingerprint": "fp", "output": None, "retry_after_s": None,
                                "started_at": 1, "finished_at": 2})
    apply(state, "TaskDeadLettered", {"event_id": "z", "plan_id": "p1", "task_id": "a",
                                      "path": "a.py", "attempts": 1, "reason": "x",
                                      "fingerprint": "fp", "at": 3})
    assert state.header["status"] == STALLED
    retry = {"event_id": "r", "plan_id": "p1", "task_id": "a", "path": "a.py", "attempt": 2,
             "delay_ms": 0, "due_at": 4, "reason": f"{REDRIVE}: by test"}
    apply(state, "TaskRetryScheduled", retry)
    assert state.tasks["a"]["status"] == "retry_wait"
    assert attempts_used(state.tasks["a"]) == 1
    assert state.header["status"] == "running" and state.header["dead"] == 0
    assert [c.fresh for c in apply(state, "TaskRetryScheduled", retry)] == [False]
    assert state.header["dead"] == 0  # a duplicate does not count the revival twice
    assert state.tasks["a"]["errors"] == []  # a redrive starts a clean no-progress history


def test_recovery_commands_redo_what_a_crash_may_have_lost() -> None:
    from agents.scheduling.fold import plan_unreported, recovery_commands

    g = nx.DiGraph([("b", "a")])
    state = PlanState()
    apply(state, "PlanAccepted", accepted(g))
    assert [c.kind for c in recovery_commands(state.header, "a", state.tasks["a"])] == [
        Cmd.RELEASE]
    assert recovery_commands(state.header, "b", state.tasks["b"]) == []  # waiting
    apply(state, "TaskDispatched", dispatched("a"))
    failed = {"event_id": "f1", "plan_id": "p1", "task_id": "a", "path": "a.py", "attempt": 1,
              "worker_id": "w1", "dispatch_id": "x-a-1", "executor": "demo", "error": "boom",
              "error_type": "crash", "retryable": True, "fingerprint": "fp", "output": "x" * 5000,
              "retry_after_s": None, "started_at": 1, "finished_at": 2}
    apply(state, "TaskFailed", failed)
    (cmd,) = recovery_commands(state.header, "a", state.tasks["a"])
    assert cmd.kind == Cmd.DECIDE_FAILURE and not cmd.fresh
    kept = state.tasks["a"]["last_failure"]
    assert kept["error"] == "boom" and len(kept["output"]) == 2000  # bounded
    apply(state, "TaskRetryScheduled", {"event_id": "r", "plan_id": "p1", "task_id": "a",
                                        "path": "a.py", "attempt": 2, "delay_ms": 5,
                                        "due_at": 7, "reason": "x"})
    (cmd,) = recovery_commands(state.header, "a", state.tasks["a"])
    assert cmd.kind == Cmd.ARM_TIMER and state.tasks["a"]["due_at"] == 7
    state.header["status"] = "done"
    assert plan_unreported(state.header)
    apply(state, "PlanCompleted", {"plan_id": "p1", "files": 2, "executor_runs": 2,
                                   "cache_hits": 0, "failed": 0, "makespan_ms": 1,
                                   "completed_at": 3})
    assert not plan_unreported(state.header)


def test_an_expired_lease_reopens_a_dispatched_task_once() -> None:
    state = PlanState()
    apply(state, "PlanAccepted", accepted(nx.DiGraph([("b", "a")])))
    apply(state, "TaskDispatched", dispatched("a"))
    ready = {"event_id": "l1", "plan_id": "p1", "task_id": "a", "path": "a.py", "kind": "dev",
             "attempt": 1, "priority": 1.0, "cache_key": "", "ready_at": 9}
    assert [c.kind for c in apply(state, "TaskReady", ready)] == [Cmd.RELEASE]
    assert state.tasks["a"]["status"] == "ready"
    before = state.snapshot()
    assert [c.fresh for c in apply(state, "TaskReady", ready)] == [False]  # duplicate
    assert state.snapshot() == before
    apply(state, "TaskCompleted", completed("a", 10))
    assert apply(state, "TaskReady", ready) == []  # too late: done
