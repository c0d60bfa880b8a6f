"""What every handler of the plan fold shares: the status vocabulary, the log-position rule
(`newer`), the QA counters, and reopening a verified file as a failed version. Pure."""

from __future__ import annotations

from typing import Any, cast

from agents.scheduling import fixes
from agents.scheduling.model import Cmd, Command, PlanStatus, TaskStatus

# Statuses under their short names (the fold's vocabulary; values are plain strings).
WAITING, READY, DISPATCHED = TaskStatus.WAITING, TaskStatus.READY, TaskStatus.DISPATCHED
FAILED, RETRY_WAIT, DONE, DEAD = (TaskStatus.FAILED, TaskStatus.RETRY_WAIT, TaskStatus.DONE,
                                  TaskStatus.DEAD)
RUNNING, PLAN_DONE, STALLED, REJECTED = (PlanStatus.RUNNING, PlanStatus.DONE,
                                         PlanStatus.STALLED, PlanStatus.REJECTED)

REDRIVE = "redrive"  # reason prefix of a TaskRetryScheduled that revives a dead task
ERRORS_KEPT = 10     # failure fingerprints kept per task (no-progress needs the last k)
OUTPUT_KEPT = 2000   # characters of a failure's output kept for a decision after a restart


def newer(record: Any, seq: int) -> bool:
    """True when `record` has not yet seen the event at `seq` (so the event may change it)."""
    return int(record.get("seq", -1)) < seq


def qa_summary(qa: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a task keeps of its verdict: the chain, and checks run / skipped by name."""
    if not qa:
        return None
    checks = qa.get("checks") or []
    return {"chain": qa.get("chain"), "ms": int(qa.get("duration_ms") or 0),
            "ran": [c["name"] for c in checks if c["status"] not in ("skipped",)],
            "skipped": [c["name"] for c in checks if c["status"] == "skipped"]}


def count_checks(h: dict[str, Any], qa: dict[str, Any] | None) -> None:
    """Header counters of QA work: checks run and skipped, versions that failed."""
    if not qa:
        return
    checks = qa.get("checks") or []
    h["qa_checks"] = int(h.get("qa_checks") or 0) + sum(
        1 for c in checks if c["status"] != "skipped")
    h["qa_skipped"] = int(h.get("qa_skipped") or 0) + sum(
        1 for c in checks if c["status"] == "skipped")
    h["qa_ms"] = int(h.get("qa_ms") or 0) + int(qa.get("duration_ms") or 0)
    if not qa.get("passed"):
        h["qa_failed"] = int(h.get("qa_failed") or 0) + 1


def plan_done_command(h: dict[str, Any], fresh: bool) -> list[Command]:
    if h.get("status") == PLAN_DONE and not h.get("reported"):
        return [Command(Cmd.PLAN_DONE, h["plan_id"], fresh=fresh)]
    return []


def reopen(task: Any, failure: dict[str, Any], seq: int) -> None:
    """A verified file goes back to the fix loop as a failed version (its current content,
    the evidence of what found it wanting): a failing test, a test file that blames it."""
    task.update({"status": TaskStatus.FAILED, "last_failure": failure, "seq": seq,
                 "errors": (task["errors"] + [failure["fingerprint"]])[-ERRORS_KEPT:]})
    fixes.record_failure(cast("dict[str, Any]", task), failure)


def found_wanting(task_id: str, task: Any, *, plan_id: str, event_id: str, source: str,
                  error: str, error_type: str, fingerprint: str, output: str, at: int,
                  check: str, command: str, findings: int, reason: str = ""
                  ) -> dict[str, Any]:
    """The failed-version record of a verified file that something after its own checks
    found wanting (the plan's tests, a canary): its current version, with a verdict of one
    failed check by `source`, in the shape of a worker's QA failure so the fix loop takes
    it from there."""
    return {
        "event_id": event_id, "plan_id": plan_id, "task_id": task_id,
        "path": task["spec"]["path"], "attempt": int(task["attempt"]), "worker_id": source,
        "dispatch_id": task.get("dispatch_id") or "", "executor": task["spec"]["executor"],
        "error": error, "error_type": error_type, "retryable": True,
        "fingerprint": fingerprint, "output": output[-fixes.EVIDENCE_MAX:],
        "retry_after_s": None, "started_at": at, "finished_at": at,
        "content_hash": task.get("content_hash"), "size": int(task.get("size") or 0),
        "qa": {"chain": source, "passed": False, "duration_ms": 0, "fingerprint": fingerprint,
               "checks": [{"name": check, "status": "fail", "blocking": True,
                           "command": command, "duration_ms": 0, "findings": findings,
                           "introduced": findings, "reason": reason,
                           "output": output[:2048], "lines": []}]},
    }
