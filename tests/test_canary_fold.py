"""A failed canary in the pure fold: the files it names go back to the fix loop with the
analysis as evidence, the plan runs again (its tests too) and completes again; a request
applied once is never applied twice; a plan not finished ignores it."""

from __future__ import annotations

from typing import Any

from test_integration_fold import accepted, finish_file, result, started

from agents.scheduling import fixes
from agents.scheduling.fold import DONE, FAILED, PLAN_DONE, PlanState, apply
from agents.scheduling.model import Cmd


def request(paths: list[str], event_id: str = "fix-1") -> dict[str, Any]:
    return {"event_id": event_id, "plan_id": "p1", "revision": "v2", "stable_revision": "v1",
            "run": "v2#1", "paths": paths, "reason": "error_rate failed: 0.31 > 0.05",
            "evidence": '{"percent": 25, "analysis": {"error_rate": {"last": [0.31]}}}',
            "at": 500}


def finished(options: dict[str, str] | None = None) -> PlanState:
    state = PlanState()
    apply(state, "PlanAccepted", accepted({"integration": "off", **(options or {})}))
    for path in ("calc/ops.py", "calc/util.py", "tests/test_ops.py"):
        finish_file(state, path)
    assert state.header["status"] == PLAN_DONE
    apply(state, "PlanCompleted", {"plan_id": "p1"})
    assert state.header["reported"]
    return state


def test_the_named_files_are_reopened_with_the_evidence_and_decided() -> None:
    state = finished()
    cmds = apply(state, "RolloutFixRequested", request(["calc/ops.py"]), seq=1000)
    assert [(c.kind, c.task_id, c.fresh) for c in cmds] == [
        (Cmd.DECIDE_FAILURE, "calc/ops.py", True)]
    task = state.task("calc/ops.py")
    assert task["status"] == FAILED
    failure = task["last_failure"]
    assert failure["error_type"] == fixes.ROLLOUT_ERROR and fixes.is_qa_failure(failure)
    assert failure["content_hash"] == "h1"  # the version to fix is the one rolled out
    assert "0.31 > 0.05" in failure["output"] and '"percent": 25' in failure["output"]
    assert "calc/ops.py" in failure["output"] and "v1" in failure["output"]
    assert failure["qa"]["checks"][0]["name"] == "canary analysis"
    h = state.header
    assert (h["status"], h["done"], h["reported"], h["completed_at"]) == ("running", 2,
                                                                          False, None)
    assert h["rollout_fixes"] == 1 and state.task("calc/util.py")["status"] == DONE
    # The fix loop's decision for it: a fix task (attempt 1 of the cap).
    decision = fixes.decide(task, fixes.FIX_ATTEMPTS)
    assert decision.fix and decision.fix_attempt == 1


def test_redelivery_decides_again_without_reopening_twice() -> None:
    state = finished()
    apply(state, "RolloutFixRequested", request(["calc/ops.py"]), seq=1000)
    again = apply(state, "RolloutFixRequested", request(["calc/ops.py"]), seq=1000)
    assert [(c.kind, c.fresh) for c in again] == [(Cmd.DECIDE_FAILURE, False)]
    assert state.header["done"] == 2 and state.header["rollout_fixes"] == 1


def test_a_request_applied_once_is_ignored_after_the_fix() -> None:
    state = finished()
    apply(state, "RolloutFixRequested", request(["calc/ops.py"]), seq=1000)
    cmds = finish_file(state, "calc/ops.py", attempt=2)
    assert state.header["status"] == PLAN_DONE and state.header["done"] == 3
    assert Cmd.PLAN_DONE in [c.kind for c in cmds]  # completes (and is reported) again
    apply(state, "PlanCompleted", {"plan_id": "p1"})
    # The stage redoes its effect after a crash: same id, a later offset.
    assert apply(state, "RolloutFixRequested", request(["calc/ops.py"]), seq=2000) == []
    assert state.task("calc/ops.py")["status"] == DONE
    assert state.header["status"] == PLAN_DONE and state.header["rollout_fixes"] == 1
    # A new failure of the fixed revision is a new request: it reopens again.
    cmds = apply(state, "RolloutFixRequested", request(["calc/ops.py"], "fix-2"), seq=2001)
    assert [c.task_id for c in cmds] == ["calc/ops.py"]
    assert state.header["rollout_fixes"] == 2


def test_unknown_paths_or_a_running_plan_change_nothing() -> None:
    state = finished()
    assert apply(state, "RolloutFixRequested", request(["nope.py"]), seq=1000) == []
    assert state.header["status"] == PLAN_DONE and state.header["done"] == 3
    running = PlanState()
    apply(running, "PlanAccepted", accepted({"integration": "off"}))
    finish_file(running, "calc/ops.py")
    assert apply(running, "RolloutFixRequested", request(["calc/ops.py"]), seq=1000) == []
    assert running.task("calc/ops.py")["status"] == DONE


def test_a_plan_with_tests_runs_them_again_after_the_fix() -> None:
    state = PlanState()
    apply(state, "PlanAccepted", accepted())
    for path in ("calc/ops.py", "calc/util.py", "tests/test_ops.py"):
        finish_file(state, path)
    run = started(state, [["tests/test_ops.py::test_add"]])
    apply(state, "IntegrationStarted", run, seq=900)
    apply(state, "IntegrationResult", result(run, 0), seq=901)
    assert state.header["status"] == PLAN_DONE
    apply(state, "RolloutFixRequested", request(["calc/ops.py"]), seq=1000)
    cmds = finish_file(state, "calc/ops.py", attempt=2)
    assert state.header["status"] != PLAN_DONE  # the suite first
    assert Cmd.INTEGRATE in [c.kind for c in cmds]
    assert state.header["integration"]["scope"] == "full"
