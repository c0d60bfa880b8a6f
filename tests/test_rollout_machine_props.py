"""Random operation sequences with duplicate deliveries against the rollout machine.

Checks: duplicates (same id, any time later) change nothing; re-sent replies with a fresh
id change nothing but the id list; at most one rollback per failure; timers only while
active; JSON-able state; replaying the delivered log from scratch gives the same state.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.rollout.machine import apply, pending_timers, replay
from agents.rollout.types import ACTIVE, ActionKind, Phase
from tests.test_rollout_machine import BAD, GOOD, MEH, NODATA, Driver

ERR = {"value": None, "samples": 0, "error": "timeout"}
MEASUREMENTS = [GOOD, GOOD, GOOD, BAD, MEH, NODATA, ERR]
CONFIG = {"metrics": {"err": {"success": "result <= 0.01", "failure": "result > 0.05",
                              "min_samples": 10, "failure_limit": 1,
                              "inconclusive_limit": 2, "consecutive_error_limit": 1}}}
CONTROLS = ["promote", "promote_full", "skip_step", "pause", "resume", "abort", "retry"]
REPLIES = {"DeployDone", "DeployFailed", "AnalysisMeasured", "TimerFired"}

op = st.one_of(
    st.tuples(st.just("deploy"), st.booleans()),
    st.tuples(st.just("deploy_failed"), st.booleans()),
    st.tuples(st.just("measure"), st.sampled_from(range(len(MEASUREMENTS)))),
    st.tuples(st.just("fire"), st.sampled_from(["deadline", "bake", "analysis"])),
    st.tuples(st.just("fire"), st.sampled_from(["analysis", "bake"])),
    st.tuples(st.just("control"), st.sampled_from(CONTROLS)),
    st.tuples(st.just("tick"), st.integers(1, 400)),
    st.tuples(st.just("new_revision"), st.booleans()),
    st.tuples(st.just("dup"), st.integers(0, 10_000)),
    st.tuples(st.just("resend"), st.integers(0, 10_000)),
)


def without_ids(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in ("seen", "updated_at")}


def perform(d: Driver, step: tuple[Any, ...], revisions: list[str]) -> None:
    kind, arg = step
    if kind == "deploy" and d.state["run"]:
        d.deployed(weight=0 if arg else None)
    elif kind == "deploy_failed" and d.state["run"]:
        d.send("DeployFailed", run=d.run, step=d.state["step"], reason="boom",
               weight=0 if arg else d.spec.steps[d.state["step"]],
               rollback=d.state["rollbacks"] if arg else None)
    elif kind == "measure" and d.state["run"]:
        d.measure(MEASUREMENTS[arg])
    elif kind == "fire" and arg in d.state["timers"]:
        d.fire(arg)
    elif kind == "control":
        d.control(arg)
    elif kind == "tick":
        d.tick(arg)
    elif kind == "new_revision":
        revisions.append(f"r{len(revisions) + 1}")
        if arg:
            d.send("RolloutSuperseded", new_revision=revisions[-1])
        d.start(revisions[-1], None)
    elif kind == "dup" and d.log:
        event_type, event, _ = d.log[arg % len(d.log)]
        before = copy.deepcopy(d.state)
        assert apply(d.state, event_type, event, d.now) == []
        assert d.state == before
    elif kind == "resend" and d.log:
        event_type, event, _ = d.log[arg % len(d.log)]
        if event_type in REPLIES:
            before = without_ids(copy.deepcopy(d.state))
            fields = {k: v for k, v in event.items() if k != "id"}
            assert d.send(event_type, **fields) == []
            assert without_ids(d.state) == before


@settings(max_examples=300, deadline=None)
@given(st.lists(op, min_size=5, max_size=80), st.booleans())
def test_random_interleavings(ops: list[tuple[Any, ...]], with_judge: bool) -> None:
    config = dict(CONFIG)
    if with_judge:
        config["judge"] = {"metrics": [{"name": "latency", "min_samples": 3}]}
    d = Driver({"rollout.steps": "20,60,100", "rollout.bake_s": "120",
                "rollout.interval_s": "50", "rollout.deadline_s": "300"}, config)
    revisions = ["r1"]
    d.start("r1", "r0")
    rollbacks_allowed = 1  # the rollout is active
    seen_actions = len(d.actions)
    for step in ops:
        perform(d, step, revisions)
        for action in d.actions[seen_actions:]:
            if action.kind is ActionKind.ROLLBACK:
                assert rollbacks_allowed > 0, "a second rollback for the same failure"
                rollbacks_allowed -= 1
        seen_actions = len(d.actions)
        phase = Phase(d.state["phase"])
        # a new failure (or an abort) may ask for the next rollback
        rollbacks_allowed = 1 if phase in ACTIVE or (
            phase in (Phase.ABORTED, Phase.ROLLING_BACK) and not d.state["rollback_done"]
        ) else 0
        if phase not in ACTIVE:
            assert d.state["timers"] == {}
        if phase is not Phase.PAUSED:
            assert d.state["pause"] is None
        assert json.loads(json.dumps(d.state)) == d.state
        assert len(pending_timers(d.state)) == len(d.state["timers"])
    state, actions = replay(copy.deepcopy(d.log))
    assert state == d.state and actions == d.actions
