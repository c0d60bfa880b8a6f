"""The rollout state machine, driven step by step with a movable clock."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from agents.rollout.machine import apply, initial_state, pending_timers, replay
from agents.rollout.spec import parse_spec
from agents.rollout.types import Action, ActionKind, Phase, RolloutEventError

K = ActionKind
METRICS = {"metrics": {"err": {"success": "result <= 0.01", "failure": "result > 0.05",
                               "min_samples": 10}}}
GOOD = {"value": 0.0, "samples": 100, "error": None}
BAD = {"value": 0.2, "samples": 100, "error": None}
MEH = {"value": 0.03, "samples": 100, "error": None}
NODATA = {"value": None, "samples": 0, "error": None}
JUDGE = {"judge": {"metrics": [{"name": "latency", "critical": True, "min_samples": 5}]}}
SAME = {"latency": {"canary": [float(i) for i in range(10)],
                    "stable": [float(i) for i in range(10)]}}
WORSE = {"latency": {"canary": [float(i) + 100 for i in range(10)],
                     "stable": [float(i) for i in range(10)]}}


def kinds(actions: list[Action]) -> list[ActionKind]:
    return [a.kind for a in actions]


def weights(actions: list[Action]) -> list[int]:
    return [a.data["percent"] for a in actions if a.kind is K.SET_WEIGHT]


class Driver:
    """Sends events with fresh ids at a clock the test moves; keeps the log."""

    def __init__(self, options: dict[str, str] | None = None,
                 config: dict[str, Any] | None = None) -> None:
        self.spec = parse_spec(options or {}, config)
        self.state = initial_state("plan-1")
        self.now = 1_000_000
        self.log: list[tuple[str, dict[str, Any], int]] = []
        self.actions: list[Action] = []
        self.n = 0

    @property
    def phase(self) -> Phase:
        return Phase(self.state["phase"])

    @property
    def run(self) -> str:
        return str(self.state["run"])

    def send(self, event_type: str, **fields: Any) -> list[Action]:
        self.n += 1
        event = {"id": f"e{self.n}", **fields}
        self.log.append((event_type, event, self.now))
        out = apply(self.state, event_type, event, self.now)
        self.actions += out
        return out

    def tick(self, seconds: float) -> None:
        self.now += int(seconds * 1000)

    def start(self, revision: str = "r1", stable: str | None = "r0") -> list[Action]:
        return self.send("RolloutStarted", plan="plan-1", revision=revision,
                         stable_revision=stable, spec=self.spec.to_dict())

    def deployed(self, weight: int | None = None, run: str | None = None) -> list[Action]:
        if weight is None:
            weight = self.spec.steps[self.state["step"]]
        return self.send("DeployDone", run=run or self.run, step=self.state["step"],
                         weight=weight, rollback=self.state["rollbacks"] if weight == 0 else None)

    def fire(self, kind: str) -> list[Action]:
        due = self.state["timers"][kind]
        self.now = max(self.now, due)
        return self.send("TimerFired", run=self.run, kind=kind, due_at=due)

    def measure(self, measurement: dict[str, Any], metric: str = "err") -> list[Action]:
        return self.send("AnalysisMeasured", run=self.run, step=self.state["step"],
                         round=self.state["round"], metric=metric, measurement=measurement)

    def control(self, action: str, by: str = "ana") -> list[Action]:
        return self.send("RolloutControl", action=action, by=by)

    def bake_step(self, measurement: dict[str, Any] | None = None) -> list[Action]:
        """Deploy the current step, answer every analysis round, end the bake."""
        out = self.deployed()
        while "analysis" in self.state["timers"]:
            out += self.fire("analysis")
            out += self.measure(measurement or GOOD)
        return out + self.fire("bake")


def test_happy_path_without_metrics() -> None:
    d = Driver()
    first = d.start()
    assert kinds(first) == [K.SET_WEIGHT, K.ARM_TIMER]
    assert first[0].data == {"percent": 10, "revision": "r1", "stable_revision": "r0",
                             "run": "r1#1", "step": 0}
    assert first[1].data == {"kind": "deadline", "due_at": d.now + 900_000, "run": "r1#1"}
    t0 = d.now
    for _ in range(5):
        assert d.phase is Phase.PROGRESSING
        d.tick(30)
        arm = d.deployed()
        assert d.phase is Phase.BAKING and kinds(arm) == [K.ARM_TIMER]
        assert arm[0].data["due_at"] == d.now + 300_000
        d.fire("bake")
    assert weights(d.actions) == [10, 25, 50, 75, 100]
    assert d.phase is Phase.SUCCEEDED and d.actions[-1].kind is K.DONE
    assert d.state["stable_revision"] == "r1" and d.state["timers"] == {}
    assert d.now == t0 + 5 * 330_000


def test_happy_path_with_analysis_rounds() -> None:
    d = Driver({"rollout.bake_s": "300", "rollout.interval_s": "60"}, METRICS)
    d.start()
    d.deployed()
    rounds = []
    while "analysis" in d.state["timers"]:
        due = d.state["timers"]["analysis"]
        out = d.fire("analysis")
        assert out[0].kind is K.MEASURE and out[0].data["metrics"] == ["err"]
        assert out[0].data["percent"] == 10
        rounds.append((out[0].data["round"], due))
        assert d.measure(GOOD) == []
    start = d.state["timers"]["bake"] - 300_000
    assert rounds == [(i, start + i * 60_000) for i in (1, 2, 3, 4)]
    assert weights(d.fire("bake")) == [25]
    for _ in range(4):
        d.bake_step()
    assert d.phase is Phase.SUCCEEDED


def test_failed_analysis_rolls_back_once_with_evidence() -> None:
    d = Driver({"rollout.bake_s": "300"}, METRICS)
    d.start()
    d.bake_step()  # 10 % passes
    d.deployed()
    d.fire("analysis")
    out = d.measure(BAD)
    assert kinds(out) == [K.ROLLBACK, K.FIX_TASKS]
    assert d.phase is Phase.ROLLING_BACK and d.state["timers"] == {}
    evidence = out[1].data["evidence"]
    assert evidence["percent"] == 25 and evidence["revision"] == "r1"
    assert evidence["analysis"]["err"]["failed"] == 1
    assert evidence["analysis"]["err"]["last"][-1]["value"] == 0.2
    assert "failed (1) > failure_limit (0)" in out[0].data["reason"]
    assert out[0].data["stable_revision"] == "r0"
    # more bad news for the same run asks for nothing more
    d.state["round"] += 1
    assert d.measure(BAD) == []
    assert d.send("DeployFailed", run=d.run, step=1, weight=25, reason="late") == []
    assert d.deployed(weight=0) == []
    assert d.phase is Phase.ROLLED_BACK and d.state["rollback_done"]
    assert sum(a.kind is K.ROLLBACK for a in d.actions) == 1


def test_retry_after_rollback_starts_a_new_run() -> None:
    d = Driver({"rollout.bake_s": "300"}, METRICS)
    d.start()
    d.deployed()
    d.fire("analysis")
    d.measure(BAD)
    old_run = d.run
    d.deployed(weight=0)
    out = d.control("retry")
    assert weights(out) == [10] and d.run == "r1#2" != old_run
    assert d.phase is Phase.PROGRESSING and d.state["failure"] is None
    # replies to the old run are stale
    assert d.deployed(run=old_run) == [] and d.phase is Phase.PROGRESSING


def test_inconclusive_beyond_limit_pauses_then_resume_rebakes() -> None:
    config = {"metrics": {"err": {**METRICS["metrics"]["err"], "inconclusive_limit": 1}}}
    d = Driver({"rollout.bake_s": "300"}, config)
    d.start()
    d.deployed()
    d.fire("analysis")
    assert d.measure(MEH) == []  # one inconclusive is tolerated
    d.fire("analysis")
    out = d.measure(NODATA)  # no data counts as inconclusive: 2 > 1
    assert kinds(out) == [K.ESCALATE] and d.phase is Phase.PAUSED
    assert d.state["pause"]["kind"] == "analysis" and d.state["timers"] == {}
    assert out[0].data["evidence"]["analysis"]["err"]["inconclusive"] == 2
    d.tick(3600)  # a person looks at it an hour later
    resumed = d.control("resume")
    assert kinds(resumed) == [K.ARM_TIMER, K.ARM_TIMER] and d.phase is Phase.BAKING
    assert d.state["timers"]["bake"] == d.now + 300_000  # a full, fresh bake
    assert d.state["analysis"] == {} and d.state["first_round"] == 3
    # a measurement asked for before the pause does not count in the fresh run
    stale = {"run": d.run, "step": 0, "round": 2, "metric": "err", "measurement": BAD}
    assert d.send("AnalysisMeasured", **stale) == [] and d.state["analysis"] == {}
    while "analysis" in d.state["timers"]:
        d.fire("analysis")
        d.measure(GOOD)
    assert weights(d.fire("bake")) == [25]


def test_bake_without_a_successful_measurement_pauses() -> None:
    config = {"metrics": {"err": {**METRICS["metrics"]["err"], "inconclusive_limit": 10}}}
    d = Driver({"rollout.bake_s": "300"}, config)
    d.start()
    out = d.bake_step(NODATA)
    assert d.phase is Phase.PAUSED and kinds(out)[-1] is K.ESCALATE
    assert "no successful measurement" in out[-1].data["reason"]
    assert d.control("promote")[0].kind is K.SET_WEIGHT  # a person accepts the step


def test_promote_skip_and_full() -> None:
    d = Driver()
    d.start()
    rejected = d.control("promote")
    assert kinds(rejected) == [K.REJECTED] and "not live" in rejected[0].data["reason"]
    assert d.state["last_control"]["accepted"] is False
    assert weights(d.control("skip_step")) == [25]  # skip even before it is live
    d.deployed()
    assert weights(d.control("promote")) == [50]
    assert d.state["last_control"] == {"action": "promote", "by": "ana", "at": d.now,
                                       "accepted": True, "reason": None}
    assert weights(d.control("promote_full")) == [100]
    assert kinds(d.control("promote_full")) == [K.REJECTED]
    d.control("pause")
    assert d.deployed() == []  # 100 % went live during the pause

    assert kinds(d.control("resume")) == [K.DONE] and d.phase is Phase.SUCCEEDED
    for verb in ("promote", "pause", "resume", "abort", "retry", "skip_step"):
        assert kinds(d.control(verb)) == [K.REJECTED]


def test_promote_full_at_the_last_step_sends_no_second_weight() -> None:
    d = Driver({"rollout.steps": "50,100"})
    d.start()
    d.deployed()
    d.control("promote")
    assert d.control("promote_full") == [] and d.state["full"]
    assert kinds(d.control("skip_step")) == [K.REJECTED]  # 100 % is not live yet
    assert kinds(d.deployed()) == [K.DONE]
    d2 = Driver({"rollout.steps": "50,100"})
    d2.start()
    d2.deployed()
    d2.control("promote")
    d2.deployed()
    assert kinds(d2.control("promote_full")) == [K.DONE]


def test_manual_pause_keeps_the_remaining_bake() -> None:
    d = Driver()
    d.start()
    d.deployed()
    bake_due = d.state["timers"]["bake"]
    d.tick(100)
    assert d.control("pause") == [] and d.phase is Phase.PAUSED
    assert kinds(d.control("pause")) == [K.REJECTED]
    # the old bake timer fires during the pause: disarmed, nothing happens
    assert d.send("TimerFired", run=d.run, kind="bake", due_at=bake_due) == []
    d.tick(1000)
    out = d.control("resume")
    assert out[0].data == {"kind": "bake", "due_at": d.now + 200_000, "run": d.run}
    assert weights(d.fire("bake")) == [25]


def test_pause_while_deploying_keeps_the_remaining_deadline() -> None:
    d = Driver()
    d.start()
    d.tick(600)
    d.control("pause")
    d.tick(5000)
    out = d.control("resume")
    assert out[0].data["due_at"] == d.now + 300_000 and d.phase is Phase.PROGRESSING
    # a deploy confirmed during a pause starts the bake on resume
    d.control("pause")
    assert d.deployed() == [] and d.phase is Phase.PAUSED
    assert kinds(d.control("resume")) == [K.ARM_TIMER] and d.phase is Phase.BAKING


def test_abort_then_retry() -> None:
    d = Driver()
    d.start()
    d.deployed()
    out = d.control("abort")
    assert kinds(out) == [K.ROLLBACK] and d.phase is Phase.ABORTED
    assert out[0].data["reason"] == "aborted by ana"
    assert kinds(d.control("abort")) == [K.ROLLBACK]  # not confirmed yet: ask again
    d.deployed(weight=0)
    assert d.phase is Phase.ABORTED and d.state["rollback_done"]
    assert kinds(d.control("abort")) == [K.REJECTED]
    assert weights(d.control("retry")) == [10] and d.state["attempt"] == 2


def test_progress_deadline_exceeded_rolls_back() -> None:
    d = Driver()
    d.start()
    d.tick(899)
    assert d.state["timers"]["deadline"] > d.now
    out = d.fire("deadline")
    assert kinds(out) == [K.ROLLBACK, K.ESCALATE] and d.phase is Phase.ROLLING_BACK
    assert "progress deadline exceeded at step 0" in out[0].data["reason"]
    assert d.deployed() == []  # too late


def test_deploy_failure_rolls_back_and_escalates() -> None:
    d = Driver()
    d.start()
    out = d.send("DeployFailed", run=d.run, step=0, weight=10, reason="image pull")
    assert kinds(out) == [K.ROLLBACK, K.ESCALATE]
    assert out[1].data["evidence"]["deploy"]["reason"] == "image pull"
    failed_again = d.send("DeployFailed", run=d.run, step=0, weight=0, rollback=1,
                          reason="timeout")
    assert kinds(failed_again) == [K.ESCALATE]
    assert "rollback failed" in failed_again[0].data["reason"]


def test_new_revision_supersedes_mid_rollout() -> None:
    d = Driver()
    d.start("r1", "r0")
    d.deployed()
    d.control("promote")
    old_run = d.run
    out = d.start("r2", None)
    assert out[0].data == {"percent": 10, "revision": "r2", "stable_revision": "r0",
                           "run": "r2#1", "step": 0}
    assert any("superseded by revision r2" in h["why"] for h in d.state["history"])
    assert d.deployed(run=old_run) == [] and d.state["step"] == 0
    assert d.start("r2") == []  # the same revision again is a no-op


def test_superseded_event_stops_the_rollout() -> None:
    d = Driver()
    d.start()
    d.deployed()
    assert d.send("RolloutSuperseded", new_revision="r2") == []
    assert d.phase is Phase.SUPERSEDED and d.state["timers"] == {}
    assert d.send("TimerFired", run=d.run, kind="bake", due_at=d.now + 300_000) == []
    assert weights(d.start("r2")) == [10]


def test_after_success_the_revision_is_the_new_stable() -> None:
    d = Driver({"rollout.steps": "50,100", "rollout.bake_s": "0"})
    d.start("r1", "r0")
    d.deployed()
    d.deployed()
    assert d.phase is Phase.SUCCEEDED
    out = d.start("r2", None)
    assert out[0].data["stable_revision"] == "r1"


def test_judge_pass_fail_marginal() -> None:
    d = Driver({"rollout.steps": "50,100", "rollout.bake_s": "60"}, JUDGE)
    d.start()
    d.deployed()
    out = d.fire("bake")
    assert kinds(out) == [K.COMPARE, K.ARM_TIMER] and out[0].data["metrics"] == ["latency"]
    passed = d.send("ComparisonMeasured", run=d.run, step=0, samples=SAME)
    assert weights(passed) == [100] and d.state["judgement"]["verdict"] == "pass"
    d.deployed()
    d.fire("bake")
    failed = d.send("ComparisonMeasured", run=d.run, step=1, samples=WORSE)
    assert kinds(failed) == [K.ROLLBACK, K.FIX_TASKS]
    assert failed[1].data["evidence"]["judgement"]["verdict"] == "fail"


def test_judge_marginal_pauses_and_resume_asks_again() -> None:
    d = Driver({"rollout.steps": "50,100", "rollout.bake_s": "60"}, JUDGE)
    d.start()
    d.deployed()
    d.fire("bake")
    out = d.send("ComparisonMeasured", run=d.run, step=0, samples={})  # no data
    assert kinds(out) == [K.ESCALATE] and d.phase is Phase.PAUSED
    again = d.control("resume")
    assert kinds(again) == [K.COMPARE, K.ARM_TIMER]
    late = d.fire("deadline")  # the samples never come
    assert kinds(late) == [K.ROLLBACK, K.ESCALATE]
    assert "judge's samples" in late[0].data["reason"]


def scripted() -> Driver:
    d = Driver({"rollout.bake_s": "120", "rollout.interval_s": "50"}, METRICS)
    d.start()
    d.bake_step()
    d.tick(10)
    d.control("pause")
    d.tick(100)
    d.control("resume")
    d.deployed()
    d.fire("analysis")
    d.measure(BAD)
    d.deployed(weight=0)
    d.control("retry")
    d.bake_step()
    return d


def test_replaying_the_log_gives_the_same_state_and_actions() -> None:
    d = scripted()
    state, actions = replay(copy.deepcopy(d.log))
    assert state == d.state and actions == d.actions
    # the same through JSON between every event, as a table would store it
    stored: dict[str, Any] = {}
    for event_type, event, now in d.log:
        apply(stored, event_type, event, now)
        stored = json.loads(json.dumps(stored))
    assert stored == d.state


def test_restart_resumes_with_the_same_deadlines() -> None:
    d = scripted()
    restored = json.loads(json.dumps(d.state))
    armed = pending_timers(restored)
    assert {a.data["kind"]: a.data["due_at"] for a in armed} == d.state["timers"]
    assert all(a.kind is K.ARM_TIMER and a.data["run"] == d.run for a in armed)


def test_duplicates_change_nothing() -> None:
    d = scripted()
    before = copy.deepcopy(d.state)
    for event_type, event, now in d.log[-40:]:
        assert apply(d.state, event_type, event, now + 1) == []
    assert d.state == before


def test_bad_events_are_refused_and_leave_the_state_alone() -> None:
    d = Driver()
    d.start()
    before = copy.deepcopy(d.state)
    with pytest.raises(RolloutEventError, match="unknown"):
        apply(d.state, "Nope", {"id": "x"}, d.now)
    with pytest.raises(RolloutEventError, match="without an id"):
        apply(d.state, "DeployDone", {"run": d.run}, d.now)
    with pytest.raises(RolloutEventError):
        apply(d.state, "DeployDone", {"id": "y", "run": d.run}, d.now)
    with pytest.raises(RolloutEventError):
        apply(d.state, "RolloutControl", {"id": "z", "action": "dance"}, d.now)
    with pytest.raises(RolloutEventError):
        apply(d.state, "RolloutStarted", {"id": "w", "revision": "r9",
                                          "spec": {**d.spec.to_dict(), "steps": [50]}}, d.now)
    assert d.state == before


def test_only_an_acted_ops_rollback_of_the_running_run_aborts() -> None:
    from agents.rollout.controls import ops_abort_refusal

    state = initial_state("p")
    decision = {"action": "rollback", "params": {"acted": "true"}, "at": 5_000}
    assert "no rollout under way" in (ops_abort_refusal(state, decision) or "")
    state.update(phase="baking", run="r2#1", run_started_at=4_000)
    assert ops_abort_refusal(state, decision) is None
    assert "before run r2#1" in (ops_abort_refusal(state, {**decision, "at": 3_999}) or "")
    dry = {**decision, "params": {"acted": "false"}}
    assert "dry run" in (ops_abort_refusal(state, dry) or "")
    assert ops_abort_refusal(state, {**decision, "action": "scale"}) == "not a rollback"
    other = {**decision, "params": {"acted": "true", "revision": "r1"}}
    assert "about revision r1" in (ops_abort_refusal(state, other) or "")
