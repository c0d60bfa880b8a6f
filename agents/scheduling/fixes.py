"""The fix loop's policy: what a failed QA verdict leads to. Pure functions, no Kafka.

A version of a file that fails its checks is kept (by hash) with its verdict in the task's
`fixes` history. The next fix task starts from the last version, unless that version made
things worse than the one it was fixing (more blocking findings): then it is reverted and
the fix starts again from the version before, and the bad fix still counts as an attempt.
The loop ends in the dead-letter topic, with the evidence, when the cap of fix attempts is
spent or when two versions in a row fail with the same fingerprint (no progress: another
try at the same thing will not help; OpenHands' stuck detector and aider's reflection
limit make the same call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FIX_ATTEMPTS = 3    # fix tasks per file before it is escalated (plan option qa.fix_attempts)
HISTORY_KEPT = 8    # QA-failed versions remembered per task (the cap is checked before this)
EVIDENCE_MAX = 8192  # characters of a failing check's output a fix task carries
QA_ERROR = "qa"     # TaskFailed.error_type of a version that failed its checks
ROLLOUT_ERROR = "rollout"  # ... of a verified file reopened by a failed canary


@dataclass(frozen=True)
class FixDecision:
    fix: bool              # True: schedule fix attempt `fix_attempt`; False: escalate
    reason: str
    fix_attempt: int = 0
    reverted: bool = False


def is_qa_failure(failure: dict[str, Any] | None) -> bool:
    """A version that failed its checks, the plan's tests or its canary (not an executor
    failure)."""
    return bool(failure) and (failure or {}).get("error_type") in (
        QA_ERROR, "integration", ROLLOUT_ERROR)


def failing_count(qa: dict[str, Any] | None) -> int:
    """Blocking findings of a verdict record (a blocking check with none counts as one)."""
    total = 0
    for check in (qa or {}).get("checks") or []:
        if check.get("blocking"):
            total += max(1, int(check.get("introduced") or 0))
    return total


def record_failure(task: dict[str, Any], ev: dict[str, Any]) -> None:
    """Add a QA-failed version to the task's history and choose the version to fix next:
    this one, or (when it is worse than the version it was meant to fix) that version."""
    history: list[dict[str, Any]] = list(task.get("fixes") or [])
    entry = {"attempt": int(ev["attempt"]), "fingerprint": ev["fingerprint"],
             "failing": failing_count(ev.get("qa")), "content_hash": ev.get("content_hash"),
             "size": int(ev.get("size") or 0), "summary": str(ev.get("error") or "")[:300],
             "reverted": False}
    base = task.get("fix_base")
    if base and entry["failing"] > int(base["failing"]):
        entry["reverted"] = True  # a regression: the next fix starts from the older base
    else:
        base = {k: entry[k] for k in ("content_hash", "size", "failing", "attempt")}
    task["fixes"] = [*history, entry][-HISTORY_KEPT:]
    task["fix_base"] = base
    task["fix_count"] = int(task.get("fix_count") or 0) + 1  # QA-failed versions so far


def decide(task: dict[str, Any], cap: int = FIX_ATTEMPTS) -> FixDecision:
    """After a QA-failed version: another fix, or escalation with the reason."""
    history = list(task.get("fixes") or [])
    if not history:
        return FixDecision(False, "qa: no failed version recorded")
    last = history[-1]
    fixes_done = int(task.get("fix_count") or len(history)) - 1  # the first version is not a fix
    if len(history) >= 2 and history[-2]["fingerprint"] == last["fingerprint"]:
        return FixDecision(False, "no progress: the same QA failure twice in a row "
                                  f"({last['summary'][:200]})")
    if fixes_done >= cap:
        return FixDecision(False, f"qa: still failing after {fixes_done} fix attempt(s) "
                                  f"(cap {cap}): {last['summary'][:200]}")
    return FixDecision(True, f"fix {fixes_done + 1}/{cap}: {last['summary'][:200]}",
                       fix_attempt=fixes_done + 1, reverted=bool(last["reverted"]))


def brief(task: dict[str, Any]) -> dict[str, Any] | None:
    """The FixBrief a fix task's work item carries, from the task's last QA failure."""
    failure = task.get("last_failure")
    base = task.get("fix_base")
    if task.get("kind") != "fix" or not is_qa_failure(failure) or not base:
        return None
    assert failure is not None
    qa = failure.get("qa") or {}
    failing = next((c for c in qa.get("checks") or [] if c.get("blocking")), None) or {}
    history = list(task.get("fixes") or [])
    return {"base_hash": base["content_hash"], "check": str(failing.get("name") or "qa"),
            "command": str(failing.get("command") or ""),
            "summary": str(failure.get("error") or "")[:500],
            "output": str(failure.get("output") or "")[:EVIDENCE_MAX],
            "lines": [list(r) for r in failing.get("lines") or []],
            "fix_attempt": max(1, int(task.get("fix_count") or len(history))),
            "reverted": bool(history and history[-1]["reverted"]),
            "history": [f"attempt {h['attempt']}: {h['summary'][:160]}"
                        + (" (made it worse; reverted)" if h["reverted"] else "")
                        for h in history]}


def state_name(task: dict[str, Any]) -> str:
    """What `status` shows for a task: written / fixing / verified on top of the statuses."""
    status = str(task["status"])
    if status == "done":
        return "verified" if task.get("qa") else "done"
    if task.get("kind") == "fix" and status in ("ready", "dispatched", "retry_wait", "failed"):
        return "fixing"
    return status
