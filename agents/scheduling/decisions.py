"""The processor's decision after a failed attempt, as a pure function of the task's state.

The edge (`streams.edge.failures`) publishes what this returns; `devline replay --verify`
calls the same function on a replayed state and compares with the decision on the log, so
the two can never drift apart. Deterministic: jitter is seeded by plan, task and attempt,
and the event id is derived from them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from agents.resilience.backoff import BackoffPolicy
from agents.scheduling import fixes
from agents.scheduling.base import REDRIVE
from agents.scheduling.model import decision_id


def failure_policy(max_attempts: int) -> BackoffPolicy:
    """The processor's retry policy (1 s doubling to at most 60 s, `max_attempts` tries)."""
    return BackoffPolicy(initial=1.0, max_interval=60.0, max_attempts=max_attempts)


def qa_fix_cap(options: dict[str, str]) -> int:
    """The plan's cap on fix attempts per file (`qa.fix_attempts`), default 3."""
    raw = options.get("qa.fix_attempts")
    try:
        return max(0, int(raw)) if raw else fixes.FIX_ATTEMPTS
    except ValueError:
        return fixes.FIX_ATTEMPTS


@dataclass(frozen=True)
class FailureDecision:
    """The event to publish (`TaskRetryScheduled` or `TaskDeadLettered`) and, after a
    failed QA version, the fix loop's verdict behind it."""

    event_type: str
    record: dict[str, Any]
    fix: fixes.FixDecision | None = None


def decide_failure(plan_id: str, options: dict[str, str], task: Any, policy: BackoffPolicy,
                   no_progress_repeats: int) -> FailureDecision | None:
    """Retry with backoff, a fix task, or dead-letter; None when there is nothing to decide
    (the task is not failed)."""
    failed = task.get("last_failure")
    if task.get("status") != "failed" or not failed:
        return None
    task_id = task["spec"]["task_id"]
    attempt = int(failed["attempt"])
    dead = {"event_id": decision_id(plan_id, task_id, attempt, "dead"), "plan_id": plan_id,
            "task_id": task_id, "path": failed["path"], "attempts": attempt,
            "fingerprint": failed["fingerprint"], "at": int(failed["finished_at"])}
    if fixes.is_qa_failure(failed):
        verdict = fixes.decide(task, qa_fix_cap(options))
        if verdict.fix:
            return FailureDecision("TaskRetryScheduled", {
                "event_id": decision_id(plan_id, task_id, attempt, "fix"),
                "plan_id": plan_id, "task_id": task_id, "path": failed["path"],
                "attempt": attempt + 1, "delay_ms": 0, "due_at": int(failed["finished_at"]),
                "reason": verdict.reason, "kind": "fix"}, verdict)
        return FailureDecision("TaskDeadLettered", {**dead, "reason": verdict.reason}, verdict)
    rng = random.Random(decision_id(plan_id, task_id, attempt, "jitter"))
    used = int(task["attempt"]) - int(task.get("attempt_base") or 0)
    decision = policy.decide(used, bool(failed["retryable"]), failed["error"], rng=rng,
                             retry_after=failed.get("retry_after_s"))
    reason = decision.reason
    recent = list(task.get("errors") or [])[-no_progress_repeats:]
    if decision.retry and len(recent) == no_progress_repeats and len(set(recent)) == 1:
        # The same error k times in a row: another attempt will not help.
        reason = (f"no progress: the same error {no_progress_repeats} times in a row "
                  f"({failed['error'][:200]})")
    elif decision.retry:
        delay_ms = int(decision.delay * 1000)
        return FailureDecision("TaskRetryScheduled", {
            "event_id": decision_id(plan_id, task_id, attempt, "retry"),
            "plan_id": plan_id, "task_id": task_id, "path": failed["path"],
            "attempt": attempt + 1, "delay_ms": delay_ms,
            "due_at": int(failed["finished_at"]) + delay_ms, "reason": decision.reason})
    return FailureDecision("TaskDeadLettered", {**dead, "reason": reason})


def redrive_id(plan_id: str, task_id: str, attempt: int) -> str:
    """The event id of the TaskRetryScheduled that revives a dead task as `attempt`."""
    return decision_id(plan_id, task_id, attempt, REDRIVE)
