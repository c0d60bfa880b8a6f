"""A test file whose own tests fail because of a module it imports: fix the module.

The worker attributes a failing test file's failures by traceback (the innermost frame
in a non-test file of the plan). When that is another file of the plan, the test file is
not what needs fixing: it waits (`blocked_on`) while the module gets a fix task carrying
the failing tests as evidence (reopened if it was verified), and runs again once the
module is verified. The module's fix loop keeps its caps: the same failure twice in a row
escalates it. Pure: no Kafka.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.scheduling import fixes

if TYPE_CHECKING:
    from agents.scheduling.fold import PlanState

BLOCKED_KEPT = 1000  # test files remembered per module (bounded by its dependents anyway)


def blamed(state: PlanState, task_id: str, ev: dict[str, Any]) -> str | None:
    """The task a test file's failing tests point at, when it is another task of the plan
    (not dead: a dead module cannot be fixed, so the test file takes the failure)."""
    if ev.get("error_type") != fixes.QA_ERROR:
        return None
    for check in (ev.get("qa") or {}).get("checks") or []:
        if check.get("name") == "pytest" and check.get("blocking"):
            for path in check.get("attributed") or []:
                target = state.task(path)
                if path != task_id and target is not None and target["status"] != "dead":
                    return path
    return None


def block(task: Any, target_id: str, seq: int) -> None:
    """The test file waits for the module to be verified again."""
    task.update({"status": "waiting", "remaining": 1, "seq": seq})
    task["blocked_on"] = target_id


def reopen_failure(target_id: str, target: Any, test: Any, ev: dict[str, Any]
                   ) -> dict[str, Any]:
    """The module's failed-version record: its verified content, the test's evidence."""
    return {**ev, "event_id": f"{ev['event_id']}-blame", "task_id": target_id,
            "path": target["spec"]["path"], "attempt": int(target["attempt"]),
            "dispatch_id": target.get("dispatch_id") or "",
            "executor": target["spec"]["executor"],
            "error": f"{test['spec']['path']}: {ev['error']}"[:500],
            "content_hash": target.get("content_hash"), "size": int(target.get("size") or 0),
            "interface_hash": target.get("built_iface")}


def note_blocked(target: Any, test_id: str) -> None:
    blocked = list(target.get("blocked") or [])
    if test_id not in blocked:
        target["blocked"] = [*blocked, test_id][-BLOCKED_KEPT:]


def unblock(state: PlanState, target: Any, target_id: str, seq: int) -> list[str]:
    """The module is verified: the test files waiting for it run again (next attempt,
    a fresh budget). Derived from state, so a redelivered completion finds them too."""
    out = []
    for test_id in target.get("blocked") or []:
        test = state.task(test_id)
        if test is None or test.get("blocked_on") != target_id:
            continue
        if int(test.get("seq", -1)) < seq and test["status"] == "waiting":
            test.update({"status": "ready", "remaining": 0, "attempt": int(test["attempt"]) + 1,
                         "kind": "dev", "dispatch_id": None, "seq": seq})
            test["attempt_base"] = int(test["attempt"]) - 1
            test["unblocked_seq"] = seq
            state.tasks[test_id] = test
        if test.get("unblocked_seq") == seq and test["status"] == "ready":
            out.append(test_id)
    return out
