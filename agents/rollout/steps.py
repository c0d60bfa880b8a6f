"""Transitions shared by the event handlers and the controls of the rollout machine.

Each function takes the working state dict, mutates it and returns the actions the
transition calls for. They assume the caller has checked that the event applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, assert_never

from agents.rollout.analysis import AnalysisRun, RunStatus
from agents.rollout.spec import RolloutSpec, spec_from_dict
from agents.rollout.types import ACTIVE, Action, ActionKind, Phase, TimerKind

# Transitions kept for `rollout status`; older ones live in the event log.
HISTORY_MAX = 50

def spec_of(state: Mapping[str, Any]) -> RolloutSpec:
    """Return the rollout's spec."""
    return spec_from_dict(state["spec"])


# -- dispatch --------------------------------------------------------------------------


def begin(s: dict[str, Any], now: int, why: str) -> list[Action]:
    """Start (or restart) the rollout of `s["revision"]` at its first step."""
    s["attempt"] += 1
    s.update(run=f"{s['revision']}#{s['attempt']}", step=0, full=False, failure=None,
             rollback_done=False, pause=None, judgement=None, run_started_at=now)
    return enter_step(s, now, why)


def enter_step(s: dict[str, Any], now: int, why: str) -> list[Action]:
    """Apply the current step's weight and arm its progress deadline."""
    spec = spec_of(s)
    s.update(phase=Phase.PROGRESSING.value, deployed=False, awaiting_judgement=False,
             analysis={}, measured=[], round=0, first_round=1,
             timers={TimerKind.DEADLINE.value: now + spec.deadline_s * 1000})
    note(s, now, why)
    return [Action(ActionKind.SET_WEIGHT, {
        "percent": spec.steps[s["step"]], "revision": s["revision"],
        "stable_revision": s["stable_revision"], "run": s["run"], "step": s["step"]}),
        arm(s, TimerKind.DEADLINE, s["timers"][TimerKind.DEADLINE.value])]


def start_bake(s: dict[str, Any], now: int, bake_ms: int | None = None,
               fresh: bool = True) -> list[Action]:
    """Bake the current (live) weight: arm the bake end and the first analysis round."""
    spec = spec_of(s)
    bake_ms = spec.bake_s[s["step"]] * 1000 if bake_ms is None else bake_ms
    if fresh:
        # Round numbers go on within the step, so a measurement asked for before a pause
        # cannot count in the fresh run.
        s.update(analysis={}, first_round=s["round"] + 1)
    s.update(phase=Phase.BAKING.value, awaiting_judgement=False)
    if bake_ms <= 0 and not spec.metrics:
        return bake_end(s, now)
    bake_due = now + bake_ms
    s["timers"] = {TimerKind.BAKE.value: bake_due}
    actions = [arm(s, TimerKind.BAKE, bake_due)]
    if spec.metrics and now + spec.interval_s * 1000 < bake_due:
        s["timers"][TimerKind.ANALYSIS.value] = now + spec.interval_s * 1000
        actions.append(arm(s, TimerKind.ANALYSIS, now + spec.interval_s * 1000))
    note(s, now, f"baking {spec.steps[s['step']]}% for {bake_ms // 1000}s")
    return actions


def analysis_run(s: Mapping[str, Any]) -> AnalysisRun:
    return AnalysisRun.from_dict(spec_of(s).metrics, s["analysis"])


def on_verdict(s: dict[str, Any], run: AnalysisRun, now: int, *, final: bool
                ) -> list[Action]:
    verdict = run.verdict(final=final)
    match verdict.status:
        case RunStatus.FAILED | RunStatus.ERROR:
            return fail(s, now, f"analysis {verdict.status.value}: {verdict.message}",
                        {"analysis": run.evidence(), "step": s["step"]}, fix=True)
        case RunStatus.INCONCLUSIVE:
            return pause(s, now, "analysis", f"analysis inconclusive: "
                                  f"{verdict.message}", {"analysis": run.evidence()})
        case RunStatus.RUNNING:
            return []
        case RunStatus.SUCCESSFUL:
            return after_analysis(s, now)
        case _:
            assert_never(verdict.status)


def bake_end(s: dict[str, Any], now: int) -> list[Action]:
    """Decide the step when its bake is over: final analysis verdict, then the judge."""
    return on_verdict(s, analysis_run(s), now, final=True)


def after_analysis(s: dict[str, Any], now: int) -> list[Action]:
    spec = spec_of(s)
    if spec.judge is None:
        return advance(s, now, "step passed")
    return request_judgement(s, now)


def request_judgement(s: dict[str, Any], now: int) -> list[Action]:
    """Ask for canary and stable samples, within the progress deadline."""
    spec = spec_of(s)
    assert spec.judge is not None
    due = now + spec.deadline_s * 1000
    s.update(phase=Phase.BAKING.value, awaiting_judgement=True,
             timers={TimerKind.DEADLINE.value: due})
    return [Action(ActionKind.COMPARE, {"metrics": [m.name for m in spec.judge.metrics],
                                        "run": s["run"], "step": s["step"]}),
            arm(s, TimerKind.DEADLINE, due)]


def advance(s: dict[str, Any], now: int, why: str) -> list[Action]:
    """Leave the current step: on to the next weight, or done after the last."""
    spec = spec_of(s)
    s.update(timers={}, pause=None)
    if s["step"] >= len(spec.steps) - 1:
        return succeed(s, now, why)
    s["step"] += 1
    return enter_step(s, now, f"{why}; next {spec.steps[s['step']]}%")


def succeed(s: dict[str, Any], now: int, why: str) -> list[Action]:
    """Make the revision the new stable one."""
    s.update(phase=Phase.SUCCEEDED.value, timers={}, pause=None,
             stable_revision=s["revision"], awaiting_judgement=False)
    note(s, now, f"succeeded: {why}")
    return [Action(ActionKind.DONE, {"revision": s["revision"], "run": s["run"]})]


def fail(s: dict[str, Any], now: int, reason: str, evidence: dict[str, Any], *,
         fix: bool) -> list[Action]:
    """Roll back once, and hand the evidence to fix tasks (`fix`) or to a person."""
    if s["phase"] not in ACTIVE:
        return []
    spec = spec_of(s)
    evidence = {**evidence, "revision": s["revision"], "run": s["run"],
                "percent": spec.steps[s["step"]]}
    s.update(phase=Phase.ROLLING_BACK.value, timers={}, pause=None,
             failure={"reason": reason, "evidence": evidence, "at": now})
    note(s, now, f"rolling back: {reason}")
    follow = ActionKind.FIX_TASKS if fix else ActionKind.ESCALATE
    return [rollback_action(s, reason, evidence),
            Action(follow, {"reason": reason, "evidence": evidence, "run": s["run"]})]


def rollback_action(s: dict[str, Any], reason: str, evidence: dict[str, Any]) -> Action:
    """Number a new rollback request and return its ROLLBACK action.

    The confirmation (DeployDone/DeployFailed with weight 0) must echo `rollback`, so a
    stale weight-0 reply cannot confirm a later request.
    """
    s["rollbacks"] = int(s.get("rollbacks", 0)) + 1
    return Action(ActionKind.ROLLBACK, {"reason": reason, "evidence": evidence,
                                        "run": s["run"], "revision": s["revision"],
                                        "stable_revision": s["stable_revision"],
                                        "rollback": s["rollbacks"]})


def note(s: dict[str, Any], now: int, why: str) -> None:
    """Append a transition to the bounded history."""
    s["history"] = [*s["history"], {"at": now, "phase": s["phase"], "step": s["step"],
                                    "why": why}][-HISTORY_MAX:]


def arm(s: Mapping[str, Any], kind: TimerKind, due_at: int) -> Action:
    return Action(ActionKind.ARM_TIMER, {"kind": kind.value, "due_at": due_at,
                                         "run": s["run"]})


def pause(s: dict[str, Any], now: int, kind: str, reason: str,
          evidence: dict[str, Any] | None = None) -> list[Action]:
    """Stop the clock of an active rollout until a person resumes, promotes or aborts.

    The remaining time of every armed deadline is kept, so a pause never eats into the
    progress deadline or the bake (Argo does not count paused time either). `kind` is
    `manual`, `analysis` or `judge`; the last two escalate with the evidence.
    """
    remaining = {k: max(0, int(due) - now) for k, due in s["timers"].items()}
    s.update(phase=Phase.PAUSED.value, timers={}, pause={
        "kind": kind, "reason": reason, "at": now, "remaining": remaining})
    note(s, now, f"paused: {reason}")
    if kind == "manual":
        return []
    return [Action(ActionKind.ESCALATE, {"reason": reason, "evidence": {
        **(evidence or {}), "step": s["step"], "revision": s["revision"]}, "run": s["run"]})]
