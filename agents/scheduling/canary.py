"""Fold handler of a failed canary: the files it implicates go back to the fix loop.

The rollout stage rolls a failed canary back and, when it can say which files changed
since the stable revision, sends `RolloutFixRequested` naming them. A finished plan takes
them back: each verified file becomes a failed version with the analysis as evidence (the
same shape as a QA failure, so the fix loop's caps and no-progress rule apply), the plan
runs again, its tests run again when all are verified, and a new `PlanCompleted` tells the
stage to roll the fixed revision out. Pure; registered in `agents.scheduling.fold`.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from agents.scheduling import fixes
from agents.scheduling.base import (
    DONE,
    FAILED,
    PLAN_DONE,
    RUNNING,
    found_wanting,
    newer,
    reopen,
)
from agents.scheduling.model import Cmd, Command

if TYPE_CHECKING:
    from agents.scheduling.fold import PlanState

APPLIED_KEPT = 8  # fix request ids a plan remembers (a redone effect repeats the last one)


def rollout_fix_requested(state: PlanState, ev: dict[str, Any], seq: int) -> list[Command]:
    h = state.header
    fresh = False
    applied = list(h.get("rollout_fix_ids") or [])
    if newer(h, seq) and ev["event_id"] not in applied and h.get("status") == PLAN_DONE:
        wanted = set(ev["paths"])
        reopened = []
        for tid, task in list(state.tasks.items()):
            if task["spec"]["path"] in wanted and task["status"] == DONE:
                reopen(task, failure_for(tid, task, ev), seq)
                state.tasks[tid] = task
                reopened.append(tid)
        if reopened:
            h.update(status=RUNNING, reported=False, completed_at=None,
                     done=int(h["done"]) - len(reopened),
                     rollout_fixes=int(h.get("rollout_fixes") or 0) + 1,
                     rollout_fix={"seq": seq, "tasks": sorted(reopened),
                                  "revision": ev["revision"]})
        h["rollout_fix_ids"] = [*applied, ev["event_id"]][-APPLIED_KEPT:]
        h["seq"] = seq
        fresh = True
    fix = h.get("rollout_fix") or {}
    if fix.get("seq") != seq:
        return []
    commands = []
    for tid in fix["tasks"]:  # decided now, or again on redelivery after a crash
        task = state.task(tid)
        if task is not None and task["status"] == FAILED and task["seq"] == seq:
            commands.append(Command(Cmd.DECIDE_FAILURE, h["plan_id"], tid, fresh=fresh))
    return commands


def failure_for(task_id: str, task: Any, ev: dict[str, Any]) -> dict[str, Any]:
    """The failed-version record of a verified file a failed canary implicates: its current
    content, with the analysis as the failing check's output."""
    fingerprint = hashlib.sha256(f"rollout\x1f{ev['run']}\x1f{ev['reason']}".encode()
                                 ).hexdigest()[:16]
    output = (f"canary {ev['revision']} (run {ev['run']}) was rolled back: {ev['reason']}\n"
              f"files changed since {ev.get('stable_revision') or 'the stable revision'}: "
              f"{', '.join(ev['paths'])}\nevidence: {ev['evidence']}")[:fixes.EVIDENCE_MAX]
    return found_wanting(
        task_id, task, plan_id=ev["plan_id"], event_id=f"rollout-{ev['event_id']}-{task_id}",
        source="rollout",
        error=f"rollout: canary {ev['revision']} rolled back: {ev['reason'][:300]}",
        error_type=fixes.ROLLOUT_ERROR, fingerprint=fingerprint, output=output,
        at=int(ev["at"]), check="canary analysis", command=f"rollout {ev['run']}",
        findings=1, reason=ev["reason"][:500])
