"""Failures: the retry-or-dead-letter decision, dead letters with escalation, redrives.

Decisions are deterministic (jitter seeded by the task and attempt, ids derived from them),
so a decision made again after a crash is the same event, and the fold keeps one.
"""

from __future__ import annotations

import logging
from typing import Any

from agents.resilience.backoff import BackoffPolicy
from agents.scheduling import fixes
from agents.scheduling import fold as F
from agents.scheduling.decisions import decide_failure
from agents.scheduling.decisions import qa_fix_cap as qa_fix_cap  # where it used to live
from agents.scheduling.fold import PlanState
from agents.scheduling.model import decision_id
from streams import topics as T
from streams.edge.ports import Ports
from streams.emit import dead_letter_headers, detach

log = logging.getLogger("devline.failures")


class Failures:
    def __init__(self, ports: Ports, policy: BackoffPolicy) -> None:
        self.p = ports
        self.policy = policy

    async def decide(self, state: PlanState, task_id: str) -> None:
        """Retry with backoff, a fix task, or dead-letter (out of attempts, not retryable, no
        progress): `agents.scheduling.decisions` decides, this publishes."""
        task = state.task(task_id)
        if task is None:
            return
        options = state.header.get("options") or {}
        decision = decide_failure(state.header["plan_id"], options, task, self.policy,
                                  self.p.settings.no_progress_repeats)
        if decision is None:
            return
        if decision.fix is not None:  # a version that failed its checks
            failed = task["last_failure"] or {}
            fix = decision.fix
            detach(await self.p.emit.metric("qa", "qa.fix_decisions", 1.0,
                                     outcome="fix" if fix.fix else "escalate",
                                     reverted="true" if fix.reverted else "false",
                                     cause=str(failed.get("error_type"))))
            if fix.fix and fix.reverted:
                log.info("task %s/%s: fix attempt %s made it worse; reverted",
                         state.header["plan_id"], task_id, failed.get("attempt"))
        await self.p.publish(decision.event_type, decision.record)

    async def dead_letter(self, state: PlanState, task_id: str, data: dict[str, Any]) -> None:
        """A dead task read back: its failure to the DLQ (reason in headers), and the PM told.
        Redone on redelivery; the ids and headers are the same each time."""
        task = state.task(task_id)
        if task is None:
            return
        plan_id = state.header["plan_id"]
        failed = dict(task["last_failure"] or {})
        attempt = int(failed.get("attempt") or task["attempt"])
        reason = str(data.get("reason") or "dead-lettered")
        kind = ("no_progress" if reason.startswith("no progress") else
                "qa" if fixes.is_qa_failure(failed) else "dead_letter")
        if failed:
            failed.setdefault("output", None)
            value = self.p.codec.encode("TaskFailed", failed)
        else:
            value = None
        await self.p.publish_dead_letter(value, task_id.encode(), [
            *dead_letter_headers(reason, topic=self.p.settings.topic(T.EVENTS), partition=None,
                                 offset=None, attempt=attempt,
                                 fingerprint=failed.get("fingerprint"), event_type="TaskFailed"),
            ("plan-id", plan_id.encode()), ("task-id", task_id.encode()),
            ("dlq-id", decision_id(plan_id, task_id, attempt, "dlq").encode())])
        await self.p.publish("Escalation", {
            "event_id": decision_id(plan_id, task_id, attempt, "escalation"),
            "plan_id": plan_id, "task_id": task_id, "kind": kind, "reason": reason,
            "attempts": attempt, "errors": list(task["errors"]),
            "last_output": failed.get("output"), "at": self.p.now_ms()}, topic=T.ESCALATIONS)
        log.warning("task %s/%s dead-lettered after %d attempts: %s", plan_id, task_id,
                    attempt, reason)

    async def redrive(self, state: PlanState, task_id: str, request: dict[str, Any]) -> None:
        """A valid redrive request: our decision to revive the task as its next attempt."""
        task = state.task(task_id)
        if task is None or task["status"] != F.DEAD:
            return
        plan_id = state.header["plan_id"]
        who = request.get("requested_by") or "unknown"
        where = (f"from DLQ offset {request['dlq_offset']}" if request.get("dlq_offset")
                 is not None else "on request")
        now = self.p.now_ms()
        await self.p.publish("TaskRetryScheduled", {
            "event_id": decision_id(plan_id, task_id, task["attempt"] + 1, "redrive"),
            "plan_id": plan_id, "task_id": task_id, "path": task["spec"]["path"],
            "attempt": task["attempt"] + 1, "delay_ms": 0, "due_at": now,
            "reason": f"{F.REDRIVE}: {where} by {who}"})
        log.info("task %s/%s redriven as attempt %d (%s by %s)", plan_id, task_id,
                 task["attempt"] + 1, where, who)
