"""What a person's control event does to a rollout (`devline rollout <verb> PLAN`).

A control that does not apply in the current phase changes nothing but `last_control`
and comes back as a REJECTED action with the reason, so the CLI can say why.

* promote: accept the current step (its weight must be live) and go on to the next;
* promote_full: go straight to 100 % and finish when it is live, skipping bakes and analysis;
* skip_step: leave the current step now, live or not (the last one only once it is live);
* pause / resume: stop and restart the clocks; a resume after an analysis pause bakes the
  step again with a fresh analysis run, after a judge pause asks the judge again, after a
  manual pause continues the bake where it stopped;
* abort: request a rollback now (again, if the previous request was not confirmed);
* retry: after a rollback or an abort, start the same revision again at the first step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, assert_never

from agents.rollout import steps
from agents.rollout.types import ACTIVE, Action, ActionKind, Control, Phase, TimerKind


def control(s: dict[str, Any], e: Mapping[str, Any], now: int) -> list[Action]:
    """Apply a RolloutControl event (`action`, `by`, optional `reason`)."""
    action = Control(e["action"])
    by = str(e.get("by") or "unknown")
    result: list[Action] | str
    match action:
        case Control.PROMOTE:
            result = _promote(s, now, by)
        case Control.PROMOTE_FULL:
            result = _promote_full(s, now, by)
        case Control.SKIP_STEP:
            result = _skip_step(s, now, by)
        case Control.PAUSE:
            result = _pause(s, now, by, str(e.get("reason") or ""))
        case Control.RESUME:
            result = _resume(s, now, by)
        case Control.ABORT:
            result = _abort(s, now, by, str(e.get("reason") or ""))
        case Control.RETRY:
            result = _retry(s, now, by)
        case _:
            assert_never(action)
    accepted = not isinstance(result, str)
    s["last_control"] = {"action": action.value, "by": by, "at": now, "accepted": accepted,
                         "reason": None if accepted else result}
    if isinstance(result, str):
        return [Action(ActionKind.REJECTED, {"control": action.value, "by": by,
                                             "reason": result, "phase": s["phase"]})]
    return result


def _inactive(s: Mapping[str, Any]) -> str:
    return f"no rollout in progress (phase {s['phase']})"


def _promote(s: dict[str, Any], now: int, by: str) -> list[Action] | str:
    if s["phase"] not in (Phase.BAKING, Phase.PAUSED):
        return _inactive(s) if s["phase"] not in ACTIVE else \
            "the step's weight is not live yet (skip_step moves on anyway)"
    if not s["deployed"]:
        return "the step's weight is not live yet (skip_step moves on anyway)"
    return steps.advance(s, now, f"promoted by {by}")


def _promote_full(s: dict[str, Any], now: int, by: str) -> list[Action] | str:
    if s["phase"] not in ACTIVE:
        return _inactive(s)
    if s["full"]:
        return "already promoting in full"
    last = len(steps.spec_of(s).steps) - 1
    if s["step"] == last:
        # 100 % is already asked for: no second SET_WEIGHT for the same step.
        if s["deployed"]:
            return steps.succeed(s, now, f"promoted in full by {by}")
        s["full"] = True
        if s["phase"] == Phase.PAUSED:
            return _resume(s, now, by)
        steps.note(s, now, f"full promotion by {by}")
        return []
    s.update(full=True, step=last, pause=None, judgement=None)
    return steps.enter_step(s, now, f"full promotion by {by}")


def _skip_step(s: dict[str, Any], now: int, by: str) -> list[Action] | str:
    if s["phase"] not in ACTIVE:
        return _inactive(s)
    last = len(steps.spec_of(s).steps) - 1
    if s["step"] == last and not s["deployed"]:
        return "the last step (100%) cannot be skipped before it is live"
    return steps.advance(s, now, f"step skipped by {by}")


def _pause(s: dict[str, Any], now: int, by: str, reason: str) -> list[Action] | str:
    if s["phase"] == Phase.PAUSED:
        return "already paused"
    if s["phase"] not in ACTIVE:
        return _inactive(s)
    return steps.pause(s, now, "manual", f"paused by {by}" + (f": {reason}" if reason else ""))


def _resume(s: dict[str, Any], now: int, by: str) -> list[Action] | str:
    if s["phase"] != Phase.PAUSED:
        return f"not paused (phase {s['phase']})"
    paused = s["pause"]
    remaining: dict[str, int] = paused["remaining"]
    spec = steps.spec_of(s)
    s["pause"] = None
    if not s["deployed"]:
        due = now + remaining.get(TimerKind.DEADLINE.value, spec.deadline_s * 1000)
        s.update(phase=Phase.PROGRESSING.value, timers={TimerKind.DEADLINE.value: due})
        steps.note(s, now, f"resumed by {by}")
        return [steps.arm(s, TimerKind.DEADLINE, due)]
    steps.note(s, now, f"resumed by {by}")
    if s["full"]:
        return steps.succeed(s, now, f"promoted in full by {by}")
    if s["awaiting_judgement"]:
        return steps.request_judgement(s, now)
    if paused["kind"] == "analysis" or TimerKind.BAKE.value not in remaining:
        return steps.start_bake(s, now)
    return steps.start_bake(s, now, bake_ms=remaining[TimerKind.BAKE.value], fresh=False)


def _abort(s: dict[str, Any], now: int, by: str, reason: str) -> list[Action] | str:
    unconfirmed = s["phase"] in (Phase.ROLLING_BACK, Phase.ABORTED) and not s["rollback_done"]
    if s["phase"] not in ACTIVE and not unconfirmed:
        return _inactive(s)
    why = f"aborted by {by}" + (f": {reason}" if reason else "")
    evidence = {"step": s["step"], "previous_failure": s["failure"]}
    s.update(phase=Phase.ABORTED.value, timers={}, pause=None,
             failure={"reason": why, "evidence": evidence, "at": now})
    steps.note(s, now, why)
    return [steps.rollback_action(s, why, evidence)]


def _retry(s: dict[str, Any], now: int, by: str) -> list[Action] | str:
    if s["phase"] not in (Phase.ROLLED_BACK, Phase.ABORTED):
        return f"nothing to retry (phase {s['phase']})"
    return steps.begin(s, now, f"retry by {by}")


def ops_abort_refusal(s: Mapping[str, Any], decision: Mapping[str, Any]) -> str | None:
    """Why an ops agent's `rollback` decision does not abort this rollout, or None when it
    does. Only an acted decision about this plan, made while the current run was under
    way (not one about an earlier run read again after a restart), aborts it."""
    params = decision.get("params") or {}
    if decision.get("action") != "rollback":
        return "not a rollback"
    if params.get("acted") != "true":
        return "dry run: recorded, not acted on"
    if s["phase"] not in ACTIVE:
        return f"no rollout under way ({s['phase']})"
    if params.get("revision") and params["revision"] != s["revision"]:
        return f"about revision {params['revision']}, not {s['revision']}"
    started = s.get("run_started_at")
    if started is None or int(decision.get("at") or 0) < int(started):
        return f"made before run {s['run']} started"
    return None
