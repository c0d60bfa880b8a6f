"""The fix loop on the pure fold and policy: a QA-failed version becomes a fix task (no
backoff, a fresh executor budget), a regression is reverted, no progress and the cap
escalate, and a redelivered event changes nothing."""

from __future__ import annotations

from typing import Any

import networkx as nx
import pytest

from agents.scheduling import fixes
from agents.scheduling.fold import DEAD, DONE, FAILED, READY, RETRY_WAIT, PlanState, apply
from agents.scheduling.model import Cmd
from tests.test_fold import accepted, completed, dispatched


def qa(fingerprint: str, blocking: int, passed: bool = False) -> dict[str, Any]:
    checks = [{"name": "parse", "status": "pass", "blocking": False, "command": "",
               "duration_ms": 1, "findings": 0, "introduced": 0, "reason": "", "output": "",
               "lines": []},
              {"name": "ruff", "status": "pass" if passed else "fail",
               "blocking": not passed, "command": "ruff check --output-format json a.py",
               "duration_ms": 40, "findings": blocking, "introduced": blocking, "reason": "",
               "output": "a.py:3:1: F821 Undefined name `x`", "lines": [[3, 3]]},
              {"name": "pytest", "status": "skipped", "blocking": False, "command": "",
               "duration_ms": 0, "findings": 0, "introduced": 0, "reason": "no tests",
               "output": "", "lines": []}]
    return {"chain": "default", "passed": passed, "duration_ms": 41,
            "fingerprint": "" if passed else fingerprint, "checks": checks}


def qa_failed(t: str, attempt: int, fingerprint: str, blocking: int = 1) -> dict[str, Any]:
    return {"event_id": f"f-{t}-{attempt}", "plan_id": "p1", "task_id": t, "path": f"{t}.py",
            "attempt": attempt, "worker_id": "w1", "dispatch_id": f"x-{t}-{attempt}",
            "executor": "demo", "error": f"ruff: F821 Undefined name (v{attempt})",
            "error_type": "qa", "retryable": True, "fingerprint": fingerprint,
            "output": "a.py:3:1: F821 Undefined name `x`\n" * 3, "retry_after_s": None,
            "started_at": 1, "finished_at": 2, "content_hash": f"v{attempt}", "size": 10,
            "qa": qa(fingerprint, blocking)}


def fix_scheduled(state: PlanState, t: str) -> dict[str, Any] | None:
    """What `Failures.decide` publishes for a QA failure (the same policy call)."""
    task = state.task(t)
    assert task is not None
    decision = fixes.decide(dict(task), fixes.FIX_ATTEMPTS)
    if not decision.fix:
        return {"dead": decision.reason}
    return {"event_id": f"r-{t}-{task['attempt']}", "plan_id": "p1", "task_id": t,
            "path": f"{t}.py", "attempt": task["attempt"] + 1, "delay_ms": 0, "due_at": 2,
            "reason": decision.reason, "kind": "fix"}


def one_file() -> PlanState:
    g = nx.DiGraph()
    g.add_nodes_from(["a", "b"])
    g.add_edge("b", "a")  # b imports a
    state = PlanState()
    apply(state, "PlanAccepted", accepted(g))
    return state


def run_fix(state: PlanState, t: str, attempt: int) -> dict[str, Any] | None:
    """Retry scheduled -> due -> ready -> dispatched, as the edge's timer and dispatcher do."""
    ev = fix_scheduled(state, t)
    assert ev is not None
    if "dead" in ev:
        return ev
    cmds = apply(state, "TaskRetryScheduled", ev)
    assert [c.kind for c in cmds] == [Cmd.ARM_TIMER]
    task = state.task(t)
    assert task is not None and task["status"] == RETRY_WAIT and task["kind"] == "fix"
    cmds = apply(state, "TaskReady", {"event_id": f"due-{attempt}", "plan_id": "p1",
                                      "task_id": t, "path": f"{t}.py", "kind": "fix",
                                      "attempt": attempt, "priority": 1.0, "cache_key": "",
                                      "ready_at": 3})
    assert [c.kind for c in cmds] == [Cmd.RELEASE]
    apply(state, "TaskDispatched", {**dispatched(t, attempt), "kind": "fix"})
    return None


def test_a_failed_version_becomes_a_fix_task_that_carries_the_evidence() -> None:
    state = one_file()
    apply(state, "TaskDispatched", dispatched("a"))
    cmds = apply(state, "TaskFailed", qa_failed("a", 1, "fp1"))
    assert [c.kind for c in cmds] == [Cmd.DECIDE_FAILURE]
    task = state.task("a")
    assert task is not None and task["status"] == FAILED
    assert task["fix_base"]["content_hash"] == "v1"
    assert state.header["qa_failed"] == 1 and state.header["qa_checks"] == 2
    assert state.header["qa_skipped"] == 1
    assert run_fix(state, "a", 2) is None
    task = state.task("a")
    assert task is not None
    assert task["attempt_base"] == 1  # a fix has a fresh executor retry budget
    brief = fixes.brief(dict(task))
    assert brief is not None
    assert brief["base_hash"] == "v1" and brief["check"] == "ruff"
    assert brief["command"].startswith("ruff check") and brief["lines"] == [[3, 3]]
    assert brief["fix_attempt"] == 1 and not brief["reverted"]
    assert "F821" in brief["output"] and brief["history"][0].startswith("attempt 1:")
    assert fixes.state_name(dict(task)) == "fixing"
    # The fix passes: the file is verified and its dependent is released.
    cmds = apply(state, "TaskCompleted", {**completed("a", 5, attempt=2),
                                          "qa": qa("", 0, passed=True)})
    task = state.task("a")
    assert task is not None and task["status"] == DONE
    assert fixes.state_name(dict(task)) == "verified"
    assert (Cmd.RELEASE, "b") in {(c.kind, c.task_id) for c in cmds}
    assert state.header["fixes"] == 1


def test_the_same_fingerprint_twice_escalates_at_once() -> None:
    state = one_file()
    apply(state, "TaskDispatched", dispatched("a"))
    apply(state, "TaskFailed", qa_failed("a", 1, "same"))
    assert run_fix(state, "a", 2) is None
    apply(state, "TaskFailed", qa_failed("a", 2, "same"))
    verdict = fix_scheduled(state, "a")
    assert verdict is not None and verdict["dead"].startswith("no progress")


def test_the_cap_escalates_after_three_fixes_that_do_not_help() -> None:
    state = one_file()
    apply(state, "TaskDispatched", dispatched("a"))
    apply(state, "TaskFailed", qa_failed("a", 1, "fp1"))
    for attempt in (2, 3, 4):
        assert run_fix(state, "a", attempt) is None
        apply(state, "TaskFailed", qa_failed("a", attempt, f"fp{attempt}"))
    verdict = fix_scheduled(state, "a")
    assert verdict is not None and "after 3 fix attempt(s)" in verdict["dead"]
    apply(state, "TaskDeadLettered", {"event_id": "dead", "plan_id": "p1", "task_id": "a",
                                      "path": "a.py", "attempts": 4, "reason": verdict["dead"],
                                      "fingerprint": "fp4", "at": 9})
    task = state.task("a")
    assert task is not None and task["status"] == DEAD
    assert state.header["status"] == "stalled" and state.header["fixes"] == 3


def test_a_fix_that_makes_it_worse_is_reverted_and_counts_as_an_attempt() -> None:
    state = one_file()
    apply(state, "TaskDispatched", dispatched("a"))
    apply(state, "TaskFailed", qa_failed("a", 1, "fp1", blocking=1))
    assert run_fix(state, "a", 2) is None
    apply(state, "TaskFailed", qa_failed("a", 2, "fp2", blocking=3))  # worse
    task = state.task("a")
    assert task is not None
    assert task["fix_base"]["content_hash"] == "v1"  # the next fix starts from v1 again
    decision = fixes.decide(dict(task))
    assert decision.fix and decision.reverted and decision.fix_attempt == 2
    assert run_fix(state, "a", 3) is None
    brief = fixes.brief(dict(state.task("a") or {}))
    assert brief is not None and brief["base_hash"] == "v1" and brief["reverted"]
    assert "reverted" in brief["history"][-1]


@pytest.mark.parametrize("event", ["TaskFailed", "TaskRetryScheduled"])
def test_a_redelivered_event_changes_nothing(event: str) -> None:
    state = one_file()
    apply(state, "TaskDispatched", dispatched("a"))
    failed = qa_failed("a", 1, "fp1")
    apply(state, "TaskFailed", failed, seq=10)
    ev: dict[str, Any] = failed
    seq = 10
    if event == "TaskRetryScheduled":
        ev = fix_scheduled(state, "a") or {}
        apply(state, event, ev, seq=11)
        seq = 11
    before = state.snapshot()
    again = apply(state, event, ev, seq=seq)
    assert state.snapshot() == before
    assert all(not c.fresh for c in again)


def test_the_fix_cap_is_a_plan_option_validated_at_submit() -> None:
    from agents.planning.rules import validate
    from devline.errors import PlanError

    plan = {"plan_id": "p", "project": "x", "name": "n", "files": [{"path": "a.py"}]}
    validate({**plan, "options": {"qa": "strict", "qa.fix_attempts": "5"}})
    with pytest.raises(PlanError, match=r"qa\.fix_attempts"):
        validate({**plan, "options": {"qa.fix_attempts": "lots"}})
    with pytest.raises(PlanError, match=r"options\.qa"):
        validate({**plan, "options": {"qa": "Not A Chain!"}})
    with pytest.raises(PlanError, match=r"integration\.shards"):
        validate({**plan, "options": {"integration.shards": "0"}})
    with pytest.raises(PlanError, match=r"options\.integration"):
        validate({**plan, "options": {"integration": "sometimes"}})
    with pytest.raises(PlanError, match="qa_defect"):
        validate({**plan, "files": [{"path": "a.py", "simulate": {"qa_defect": "odd"}}]})


def test_a_ready_fix_keeps_ready_status_name() -> None:
    state = one_file()
    task = state.task("a")
    assert task is not None and task["status"] == READY
    assert fixes.state_name(dict(task)) == "ready"


def test_executors_see_the_fix_evidence() -> None:
    """The command executor's task JSON and the http executor's prompt carry the version
    to repair and why."""
    from pathlib import Path

    from agents.executors.command import task_payload
    from agents.executors.http import user_prompt
    from agents.types import FixContext, WorkItem

    fix = FixContext(content="x = undefined_name\n", base_hash="h" * 64, check="ruff",
                     command="ruff check a.py", summary="ruff: F821 Undefined name",
                     output="a.py:1:5: F821", lines=((1, 1),), fix_attempt=2, reverted=True,
                     history=("attempt 1: ruff: F821",))
    item = WorkItem(plan_id="p", task_id="a.py", path="a.py", kind="fix", attempt=3, fix=fix)
    payload = task_payload(item, Path("sb"), Path("sb/a.py"))
    assert payload["kind"] == "fix" and payload["fix"]["content"] == fix.content
    assert payload["fix"]["lines"] == [[1, 1]] and payload["fix"]["reverted"] is True
    assert task_payload(WorkItem(plan_id="p", task_id="b", path="b.py"), Path("/s"),
                        Path("/s/b.py"))["fix"] is None
    prompt = user_prompt(item, 10_000)
    assert "fix 2" in prompt and "ruff check a.py" in prompt and "undefined_name" in prompt
    assert "reverted" in prompt and "attempt 1: ruff: F821" in prompt
