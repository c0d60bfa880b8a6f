"""Fold handlers of the quality gate beyond a single file: integration rounds, and a test
file that blames a module it imports. Pure; registered in `agents.scheduling.fold`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.scheduling import blame as B
from agents.scheduling import integration as I
from agents.scheduling.base import DONE, FAILED, PLAN_DONE, newer, plan_done_command, reopen
from agents.scheduling.model import Cmd, Command

if TYPE_CHECKING:
    from agents.scheduling.fold import PlanState


def integration_started(state: PlanState, ev: dict[str, Any], seq: int) -> list[Command]:
    h = state.header
    unseen = newer(h, seq)
    if not I.started(h, ev, unseen):
        return []
    if unseen:
        h["seq"] = seq
    return [Command(Cmd.SEND_SHARDS, h["plan_id"], fresh=unseen, data={"event": ev})]


def integration_result(state: PlanState, ev: dict[str, Any], seq: int) -> list[Command]:
    h = state.header
    fresh = False
    if newer(h, seq) and I.shard_reported(h, ev):
        outcome, reopened = I.finish(h, dict(state.tasks.items()), int(ev["at"]))
        if outcome == "done":
            h["status"] = PLAN_DONE
            h["completed_at"] = ev["at"]
        elif outcome == "fix":
            h["done"] -= len(reopened)
        h["integration"] = {**h["integration"], "finished_seq": seq}
        h["seq"] = seq
        fresh = True
    elif newer(h, seq):
        h["seq"] = seq
        fresh = True
    commands = [Command(Cmd.RECORD_TESTS, h["plan_id"], fresh=fresh, data={"event": ev})]
    integ = h.get("integration") or {}
    if integ.get("finished_seq") == seq:
        # Reopen the files the failures point at (those a crash cut off, on redelivery).
        for tid in integ.get("reopened") or []:
            task = state.task(tid)
            if task is None:
                continue
            if newer(task, seq) and task["status"] == DONE:
                reopen(task, I.failure_for(tid, dict(task), h), seq)
                state.tasks[tid] = task
            if task["status"] == FAILED and task["seq"] == seq:
                commands.append(Command(Cmd.DECIDE_FAILURE, h["plan_id"], tid, fresh=fresh))
    return commands + I.commands(h, fresh) + plan_done_command(h, fresh)


def blame_target(state: PlanState, tid: str, task: Any, target_id: str, target: Any,
                 ev: dict[str, Any], seq: int, fresh: bool) -> list[Command]:
    """The module a test file's failures point at: reopened (if verified) with the test's
    evidence, so it gets a fix task; the test file waits for it."""
    if newer(target, seq):
        if target["status"] == DONE:
            reopen(target, B.reopen_failure(target_id, target, task, ev), seq)
            target["reopened_seq"] = seq
        B.note_blocked(target, tid)
        target["seq"] = seq
        state.tasks[target_id] = target
    if target["status"] == FAILED and target.get("reopened_seq") == seq:
        return [Command(Cmd.DECIDE_FAILURE, state.header["plan_id"], target_id, fresh=fresh)]
    return []
