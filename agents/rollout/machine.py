"""The canary rollout as a fold: `apply(state, event_type, event, now_ms) -> actions`.

`state` is a JSON-able dict (a table value) that `apply` updates in place; the returned
actions are what the edge performs (set a weight, measure, arm a timer, roll back, ...).
Nothing here reads the clock: `now_ms` must be the event's own timestamp as recorded in
the log, so replaying the log from scratch rebuilds the same state and the same actions.
Deadlines are absolute `due_at` values in `state["timers"]`; after a restart the edge
re-arms them with `pending_timers(state)` and the rollout goes on where it was.

Idempotence, at three levels: an event id already seen changes nothing; replies carry the
`run` (revision and attempt) and `step` they answer, and stale ones are ignored; a timer
only fires if its `due_at` is still the armed one. A failure requests one rollback: once
the phase has left the active ones, later failures add nothing.

Step flow: SET_WEIGHT (progress deadline armed) -> DeployDone -> bake (analysis rounds every
`interval_s`, verdicts after every measurement) -> bake end: final verdict -> judge
(COMPARE, if configured) -> next step, or DONE after the last (100 %).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, assert_never

from agents.rollout import controls, steps
from agents.rollout.analysis import Measurement
from agents.rollout.judge import Verdict, judge
from agents.rollout.spec import spec_from_dict
from agents.rollout.types import (
    ACTIVE,
    Action,
    ActionKind,
    EventType,
    Phase,
    RolloutEventError,
    TimerKind,
)
from devline.errors import DevlineError

# Event ids remembered for the duplicate check. Redeliveries come soon after the original
# (from the last committed offset), and every handler also checks run/step/round/due_at,
# so an older duplicate is stale anyway; the list must not grow with the rollout's length.
SEEN_MAX = 512


def initial_state(plan: str = "") -> dict[str, Any]:
    """Return the state of a plan with no rollout yet."""
    return {"plan": plan, "phase": Phase.PENDING.value, "revision": None,
            "stable_revision": None, "attempt": 0, "run": None, "spec": None, "step": 0,
            "full": False, "deployed": False, "timers": {}, "analysis": {}, "measured": [],
            "round": 0, "first_round": 1, "awaiting_judgement": False, "judgement": None,
            "pause": None, "failure": None, "rollback_done": False, "superseded_by": None,
            "rollbacks": 0, "rollback_escalated": 0, "last_control": None, "history": [],
            "seen": [], "updated_at": None, "run_started_at": None}


def apply(state: dict[str, Any], event_type: str, event: Mapping[str, Any],
          now_ms: int) -> list[Action]:
    """Fold one event into `state` (in place) and return the actions it calls for.

    Raise RolloutEventError (dead-letter the record) for an unknown type or a missing
    field; `state` is then left unchanged.
    """
    try:
        kind = EventType(event_type)
    except ValueError as exc:
        raise RolloutEventError(f"unknown rollout event type {event_type!r}") from exc
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise RolloutEventError(f"{event_type} without an id")
    if event_id in state.get("seen", ()):
        return []
    work = copy.deepcopy(state) if state else initial_state(str(event.get("plan", "")))
    try:
        actions = _dispatch(work, kind, event, now_ms)
    except (KeyError, TypeError, ValueError) as exc:
        raise RolloutEventError(f"{event_type} {event_id}: bad or missing field: {exc}") from exc
    except DevlineError as exc:
        if isinstance(exc, RolloutEventError):
            raise
        raise RolloutEventError(f"{event_type} {event_id}: {exc}") from exc
    work["seen"] = [*work["seen"], event_id][-SEEN_MAX:]
    work["updated_at"] = now_ms
    state.clear()
    state.update(work)
    return actions


def replay(events: list[tuple[str, Mapping[str, Any], int]],
           state: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[Action]]:
    """Fold `(event_type, event, now_ms)` triples from `state` (or scratch)."""
    state = state if state is not None else initial_state()
    out: list[Action] = []
    for event_type, event, now_ms in events:
        out += apply(state, event_type, event, now_ms)
    return state, out


def pending_timers(state: Mapping[str, Any]) -> list[Action]:
    """Return ARM_TIMER actions for every armed deadline (re-arm them after a restart)."""
    return [steps.arm(state, TimerKind(k), int(due)) for k, due in sorted(state.get("timers", {})
                                                                      .items())]


def is_open(state: Mapping[str, Any]) -> bool:
    """Whether a rollout still needs the stage (active, or a rollback not confirmed)."""
    return state["phase"] in ACTIVE or (
        state["phase"] in (Phase.ROLLING_BACK, Phase.ABORTED) and not state["rollback_done"])


def outstanding(state: Mapping[str, Any]) -> list[Action]:
    """The effects whose outcome the log does not hold yet, from the state alone."""
    phase, run = state["phase"], state["run"]
    if run is None or state["spec"] is None:
        return []
    spec = steps.spec_of(state)
    step = int(state["step"])
    if phase in (Phase.PROGRESSING, Phase.PAUSED) and not state["deployed"]:
        return [Action(ActionKind.SET_WEIGHT, {
            "percent": spec.steps[step], "revision": state["revision"],
            "stable_revision": state["stable_revision"], "run": run, "step": step})]
    if phase in (Phase.ROLLING_BACK, Phase.ABORTED) and not state["rollback_done"] \
            and state["rollback_escalated"] != state["rollbacks"]:
        failure = state.get("failure") or {}
        return [Action(ActionKind.ROLLBACK, {
            "reason": failure.get("reason", "rollback"), "evidence": failure.get("evidence"),
            "run": run, "revision": state["revision"],
            "stable_revision": state["stable_revision"], "rollback": state["rollbacks"]})]
    if phase == Phase.BAKING and state["awaiting_judgement"] and spec.judge is not None:
        return [Action(ActionKind.COMPARE, {"metrics": [m.name for m in spec.judge.metrics],
                                            "run": run, "step": step})]
    if phase == Phase.BAKING and state["round"] >= max(1, state["first_round"]):
        missing = [m.name for m in spec.metrics
                   if f"{m.name}@{state['round']}" not in state["measured"]]
        if missing:
            return [Action(ActionKind.MEASURE, {"metrics": missing, "run": run, "step": step,
                                                "round": state["round"],
                                                "percent": spec.steps[step]})]
    return []


def _dispatch(s: dict[str, Any], kind: EventType, e: Mapping[str, Any],
              now: int) -> list[Action]:
    match kind:
        case EventType.ROLLOUT_STARTED:
            return _started(s, e, now)
        case EventType.ROLLOUT_SUPERSEDED:
            return _superseded(s, str(e["new_revision"]), now)
        case EventType.ROLLOUT_CONTROL:
            return controls.control(s, e, now)
        case _:
            pass
    if e.get("run") != s["run"]:
        return []  # a reply to an earlier attempt or revision
    match kind:
        case EventType.DEPLOY_DONE:
            return _deploy_done(s, e, now)
        case EventType.DEPLOY_FAILED:
            return _deploy_failed(s, e, now)
        case EventType.ANALYSIS_MEASURED:
            return _measured(s, e, now)
        case EventType.COMPARISON_MEASURED:
            return _compared(s, e, now)
        case EventType.TIMER_FIRED:
            return _timer(s, TimerKind(e["kind"]), int(e["due_at"]), now)
        case EventType.ROLLOUT_STARTED | EventType.ROLLOUT_SUPERSEDED \
                | EventType.ROLLOUT_CONTROL:
            raise AssertionError("handled above")
        case _:
            assert_never(kind)


def _started(s: dict[str, Any], e: Mapping[str, Any], now: int) -> list[Action]:
    revision = str(e["revision"])
    if revision == s["revision"] and s["phase"] != Phase.SUPERSEDED:
        return []  # the same revision again: already under way (or done)
    spec = spec_from_dict(e["spec"])
    if s["phase"] in ACTIVE or s["phase"] == Phase.ROLLING_BACK:
        _superseded(s, revision, now)
    stable = e.get("stable_revision") or (
        s["revision"] if s["phase"] == Phase.SUCCEEDED else s["stable_revision"])
    s.update(plan=str(e.get("plan") or s["plan"]), revision=revision,
             stable_revision=None if stable is None else str(stable), attempt=0,
             spec=spec.to_dict(), superseded_by=None)
    return steps.begin(s, now, f"started revision {revision}")


def _superseded(s: dict[str, Any], new_revision: str, now: int) -> list[Action]:
    if s["phase"] not in ACTIVE and s["phase"] != Phase.ROLLING_BACK:
        return []
    if new_revision == s["revision"]:
        return []
    s.update(phase=Phase.SUPERSEDED.value, superseded_by=new_revision, timers={}, pause=None)
    steps.note(s, now, f"superseded by revision {new_revision}")
    return []


def _deploy_done(s: dict[str, Any], e: Mapping[str, Any], now: int) -> list[Action]:
    phase = Phase(s["phase"])
    if int(e["weight"]) == 0:
        if phase in (Phase.ROLLING_BACK, Phase.ABORTED) and not s["rollback_done"] \
                and e.get("rollback") == s["rollbacks"]:
            s["rollback_done"] = True
            if phase is Phase.ROLLING_BACK:
                s["phase"] = Phase.ROLLED_BACK.value
            steps.note(s, now, "traffic back on stable")
        return []
    if int(e["step"]) != s["step"] or s["deployed"]:
        return []
    if phase is Phase.PROGRESSING:
        s["deployed"] = True
        s["timers"].pop(TimerKind.DEADLINE.value, None)
        if s["full"]:
            return steps.succeed(s, now, "promoted in full")
        return steps.start_bake(s, now)
    if phase is Phase.PAUSED:
        # The weight went live during a pause: the bake starts on resume.
        s["deployed"] = True
        s["pause"]["remaining"].pop(TimerKind.DEADLINE.value, None)
    return []


def _deploy_failed(s: dict[str, Any], e: Mapping[str, Any], now: int) -> list[Action]:
    reason = str(e.get("reason") or "deploy failed")
    if int(e["weight"]) == 0:
        if s["phase"] in (Phase.ROLLING_BACK, Phase.ABORTED) and not s["rollback_done"] \
                and e.get("rollback") == s["rollbacks"] != s["rollback_escalated"]:
            # One escalation per rollback request; `abort` asks for the rollback again.
            s["rollback_escalated"] = s["rollbacks"]
            return [Action(ActionKind.ESCALATE, {"reason": f"rollback failed: {reason}",
                                                 "evidence": {"failure": s["failure"]},
                                                 "run": s["run"]})]
        return []
    if s["phase"] not in ACTIVE or int(e["step"]) != s["step"]:
        return []
    return steps.fail(s, now, f"deploy of step {s['step']} failed: {reason}",
                      {"deploy": dict(e)}, fix=False)


def _timer(s: dict[str, Any], kind: TimerKind, due_at: int, now: int) -> list[Action]:
    if s["timers"].get(kind.value) != due_at:
        return []  # disarmed or re-armed since: a stale or duplicate timer
    del s["timers"][kind.value]
    spec = steps.spec_of(s)
    match kind:
        case TimerKind.DEADLINE:
            what = "the judge's samples" if s["awaiting_judgement"] else \
                f"weight {spec.steps[s['step']]}%"
            return steps.fail(s, now, f"progress deadline exceeded at step {s['step']}: {what} "
                        f"not confirmed within {spec.deadline_s}s",
                        {"step": s["step"], "due_at": due_at}, fix=False)
        case TimerKind.ANALYSIS:
            s["round"] += 1
            actions = [Action(ActionKind.MEASURE, {
                "metrics": [m.name for m in spec.metrics], "run": s["run"], "step": s["step"],
                "round": s["round"], "percent": spec.steps[s["step"]]})]
            following = due_at + spec.interval_s * 1000
            if following < s["timers"].get(TimerKind.BAKE.value, 0):
                s["timers"][TimerKind.ANALYSIS.value] = following
                actions.append(steps.arm(s, TimerKind.ANALYSIS, following))
            return actions
        case TimerKind.BAKE:
            s["timers"].pop(TimerKind.ANALYSIS.value, None)
            return steps.bake_end(s, now)
        case _:
            assert_never(kind)


def _measured(s: dict[str, Any], e: Mapping[str, Any], now: int) -> list[Action]:
    metric, key = str(e["metric"]), f"{e['metric']}@{int(e['round'])}"
    if s["phase"] != Phase.BAKING or int(e["step"]) != s["step"] or key in s["measured"] \
            or int(e["round"]) < s["first_round"] or int(e["round"]) > s["round"]:
        return []
    run = steps.analysis_run(s)
    if metric not in run.rules:
        return []
    run.record(metric, Measurement.from_dict(e["measurement"]), now)
    s["analysis"] = run.to_dict()
    s["measured"] = [*s["measured"], key]
    return steps.on_verdict(s, run, now, final=False)


def _compared(s: dict[str, Any], e: Mapping[str, Any], now: int) -> list[Action]:
    spec = steps.spec_of(s)
    if s["phase"] != Phase.BAKING or not s["awaiting_judgement"] or spec.judge is None \
            or int(e["step"]) != s["step"]:
        return []
    result = judge(spec.judge, e["samples"])
    s.update(judgement=result.to_dict(), awaiting_judgement=False, timers={})
    evidence = {"judgement": result.to_dict(), "step": s["step"]}
    match result.verdict:
        case Verdict.PASS:
            return steps.advance(s, now, f"judge passed ({result.score:g})")
        case Verdict.MARGINAL:
            s["awaiting_judgement"] = True  # resume asks the judge again
            return steps.pause(s, now, "judge", f"judge marginal: {result.reason}",
                                  evidence)
        case Verdict.FAIL:
            return steps.fail(s, now, f"judge failed: {result.reason}", evidence, fix=True)
        case _:
            assert_never(result.verdict)

