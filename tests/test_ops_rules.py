"""Each ops rule fires at its threshold and not below, on aggregates the metrics core made."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from agents.metrics import Aggregate, Aggregator, Point, WindowSpec
from agents.ops import (
    Action,
    CanaryFacts,
    ExecutorFacts,
    OpsView,
    PlanFacts,
    PoolFacts,
    RuleConfig,
    WaitingTask,
    backlog_worker_target,
    canary_breach,
    executor_errors,
    fix_rate_explosion,
    run_rules,
    stalled_critical_path,
)
from agents.resilience.clock import FakeClock

T0 = 1_700_000_100_000  # a 5-minute boundary
MIN = 60_000
SPECS = [WindowSpec(60, None, 10), WindowSpec(300, 60, 10)]


def ms(clock: FakeClock) -> int:
    return int(clock.now() * 1000)


def windows(points: Iterable[Point]) -> list[Aggregate]:
    """Fold points through the real aggregator and close every window."""
    agg = Aggregator(SPECS)
    out: list[Aggregate] = []
    for p in points:
        out += agg.add(p, p.at)
    return out + agg.tick(T0 + 10**8)


def view_of(points: Iterable[Point], **facts: object) -> OpsView:
    view = OpsView(**facts)  # type: ignore[arg-type]
    for a in windows(points):
        view.observe(a)
    return view


def verdicts(plan: str, passed: int, failed: int, at: int = T0) -> list[Point]:
    return [Point("worker", "qa.verdicts", 1.0, at + i * 100,
                  {"chain": "python", "passed": "true" if i < passed else "false",
                   "plan_id": plan, "path": f"f{i}.py"}) for i in range(passed + failed)]


def calls(executor: str, ok: int, error: int, at: int = T0) -> list[Point]:
    return [Point("worker", "executor.calls", 1.0, at + i * 100,
                  {"executor": executor, "outcome": "ok" if i < ok else "error"})
            for i in range(ok + error)]


def load(backlog: float, in_flight: float, at: int) -> list[Point]:
    return [Point("scheduler", "backlog", backlog, at), Point("scheduler", "in_flight",
                                                            in_flight, at)]


# -- stalled critical path -------------------------------------------------------------
def _plan(ready_since: int, critical: bool = True, priority: float = 5.0) -> dict[str, PlanFacts]:
    task = WaitingTask("t1", ready_since, priority, critical)
    other = WaitingTask("t2", ready_since, 8.0, False)
    return {"p1": PlanFacts("p1", 1.0, {"t1": task, "t2": other})}


@pytest.mark.parametrize(("waited_s", "fires"), [(119.999, False), (120, True), (600, True)])
def test_stalled_critical_path_fires_at_its_threshold(waited_s: float, fires: bool) -> None:
    clock = FakeClock(T0 / 1000)
    view = OpsView(plans=_plan(ms(clock)), pool=PoolFacts(workers=4, idle=1))
    clock.advance(waited_s)
    got = stalled_critical_path(view, ms(clock))
    assert bool(got) is fires
    if fires:
        (p,) = got
        assert (p.action, p.target, p.plan_id) == (Action.REPRIORITISE, "p1/t1", "p1")
        assert p.params == {"task_id": "t1", "priority": "9", "from": "5"}
        assert p.evidence == (f"plan:p1/task:t1@ready:{T0}",)


def test_stalled_task_needs_idle_workers_or_lower_priority_work_running() -> None:
    now = T0 + 10 * MIN
    busy_higher = OpsView(plans=_plan(T0), pool=PoolFacts(4, 0, min_running_priority=6.0))
    busy_lower = OpsView(plans=_plan(T0), pool=PoolFacts(4, 0, min_running_priority=4.0))
    not_critical = OpsView(plans=_plan(T0, critical=False), pool=PoolFacts(4, 2))
    assert stalled_critical_path(busy_higher, now) == []
    assert len(stalled_critical_path(busy_lower, now)) == 1
    assert stalled_critical_path(not_critical, now) == []


# -- fix-rate explosion ----------------------------------------------------------------
@pytest.mark.parametrize(("passed", "failed", "fires"),
                         [(4, 6, False), (3, 7, True), (0, 9, False), (10, 30, True)])
def test_fix_rate_explosion_fires_above_share_with_enough_verdicts(passed: int, failed: int,
                                                                   fires: bool) -> None:
    view = view_of(verdicts("p1", passed, failed) + verdicts("p2", 10, 0),
                   plans={"p1": PlanFacts("p1", 3.0)})
    got = fix_rate_explosion(view, T0 + 20 * MIN)
    assert bool(got) is fires
    if fires:
        (p,) = got
        assert (p.action, p.target, p.plan_id) == (Action.REPRIORITISE, "p1", "p1")
        assert p.params["priority"] == "2" and p.params["escalate"] == "true"
        assert p.params["failed"] == str(failed)
        assert all(k.startswith("qa.verdicts|") and "plan_id=p1" in k and "|300000|" in k
                   for k in p.evidence)


def test_fix_rate_reads_only_windows_that_have_ended() -> None:
    view = view_of(verdicts("p1", 0, 20))
    # The first hopping 5-minute window holding them is [T0 - 4 min, T0 + 1 min).
    assert fix_rate_explosion(view, T0 + MIN - 1) == []
    (p,) = fix_rate_explosion(view, T0 + MIN)
    key = f"qa.verdicts|chain=python,passed=false,plan_id=p1|300000|{T0 - 4 * MIN}"
    assert p.evidence == (key,)


# -- backlog -> worker target ------------------------------------------------------------
def test_scale_up_at_once_on_the_last_minute_peak() -> None:
    view = view_of(load(8, 2, T0 + 1000), pool=PoolFacts(workers=4))
    (p,) = backlog_worker_target(view, T0 + MIN)
    assert (p.action, p.target, p.params["replicas"], p.params["from"]) == (
        Action.SCALE, "pool", "10", "4")
    assert p.evidence == (f"backlog||60000|{T0}", f"in_flight||60000|{T0}")


def test_scale_holds_inside_tolerance_and_when_blind() -> None:
    assert backlog_worker_target(view_of(load(3, 1, T0 + 1000), pool=PoolFacts(4)),
                                 T0 + MIN) == []
    assert backlog_worker_target(OpsView(pool=PoolFacts(4)), T0 + MIN) == []


def test_scale_down_only_to_the_five_minute_peak() -> None:
    points = load(9, 1, T0 + 1000) + [p for m in range(1, 6) for p in load(0, 1, T0 + m * MIN)]
    view = view_of(points, pool=PoolFacts(workers=10))
    # Newest 1-minute window wants 2, but the newest 5-minute window still saw 10.
    assert backlog_worker_target(view, T0 + 5 * MIN) == []
    (p,) = backlog_worker_target(view, T0 + 6 * MIN)
    assert (p.params["replicas"], p.params["from"]) == ("2", "10")
    assert len(p.evidence) == 4


def test_scale_reuses_the_autoscaler_bounds() -> None:
    cfg = RuleConfig()
    view = view_of(load(500, 0, T0 + 1000), pool=PoolFacts(workers=4))
    (p,) = backlog_worker_target(view, T0 + MIN, cfg)
    assert p.params["replicas"] == str(cfg.scale.max_replicas)


# -- executor error rate --------------------------------------------------------------
@pytest.mark.parametrize(("ok", "error", "fires"),
                         [(5, 5, False), (4, 6, True), (0, 9, False), (10, 11, True)])
def test_executor_paused_above_half_errors_with_min_calls(ok: int, error: int,
                                                          fires: bool) -> None:
    view = view_of(calls("http", ok, error) + calls("demo", 10, 0))
    got = executor_errors(view, T0 + 10 * MIN)
    assert [(p.action, p.target) for p in got] == ([(Action.PAUSE_EXECUTOR, "http")]
                                                   if fires else [])


def test_paused_executor_resumes_after_cooldown_when_recovered_or_quiet() -> None:
    clock = FakeClock(T0 / 1000)
    paused_at = ms(clock)
    bad_before = calls("http", 0, 20, T0 - 5 * MIN)
    quiet = view_of(bad_before, executors={"http": ExecutorFacts("http", paused_at)})
    clock.advance(299)
    assert executor_errors(quiet, ms(clock)) == []  # cool-down not over
    clock.advance(1)
    (p,) = executor_errors(quiet, ms(clock))
    assert p.action is Action.RESUME_EXECUTOR and "too few calls" in p.reason
    assert p.evidence == (f"executor:http@paused:{paused_at}",)

    still_bad = view_of(bad_before + calls("http", 7, 3, T0 + 1000),
                        executors={"http": ExecutorFacts("http", paused_at)})
    assert executor_errors(still_bad, ms(clock) + MIN) == []  # 30% > 20%: hold
    healed = view_of(bad_before + calls("http", 8, 2, T0 + 1000),
                     executors={"http": ExecutorFacts("http", paused_at)})
    (p,) = executor_errors(healed, ms(clock) + MIN)
    assert p.action is Action.RESUME_EXECUTOR and p.evidence


# -- canary --------------------------------------------------------------------------
def _canary(threshold: float, started_at: int = T0) -> dict[str, CanaryFacts]:
    return {"d1": CanaryFacts("d1", "request_seconds", threshold, "p95", {"stage": "canary"},
                              MIN, 5, started_at, "p1")}


def _latency(values: list[float], at: int = T0) -> list[Point]:
    return [Point("deploy", "request_seconds", v, at + i, {"stage": "canary"})
            for i, v in enumerate(values)]


def test_canary_breach_proposes_rollback_above_threshold_only() -> None:
    values = [0.1] * 18 + [2.0, 2.0]
    breach = view_of(_latency(values), canaries=_canary(1.0))
    (p,) = canary_breach(breach, T0 + MIN)
    assert (p.action, p.target, p.plan_id, p.params["stat"]) == (
        Action.ROLLBACK, "d1", "p1", "p95")
    assert canary_breach(view_of(_latency(values), canaries=_canary(2.5)), T0 + MIN) == []


def test_canary_without_enough_data_or_before_the_deploy_is_inconclusive() -> None:
    assert canary_breach(view_of(_latency([5.0] * 4), canaries=_canary(1.0)), T0 + MIN) == []
    late_start = _canary(1.0, started_at=T0 + MIN)
    assert canary_breach(view_of(_latency([5.0] * 20), canaries=late_start), T0 + MIN) == []


def _measured(plan: str, revision: str, values: list[float], at: int) -> list[Point]:
    """A rollout's analysis measurements, as the stage publishes them."""
    return [Point("rollout", "canary.error_rate", v, at + i * 1000,
                  {"plan_id": plan, "revision": revision, "host": f"h{i}"})
            for i, v in enumerate(values)]


def test_canary_windows_become_facts_and_a_breach_names_its_revision() -> None:
    from agents.ops.rules import canary_facts

    # v1 was healthy a minute earlier; v2 fails 30% of its requests.
    view = view_of(_measured("p9", "v1", [0.0] * 5, T0) + _measured("p9", "v2", [0.3] * 5,
                                                                      T0 + MIN))
    assert {a.dims for a in view.aggregates.values() if a.metric == "canary.error_rate"} == {
        (("plan_id", "p9"), ("revision", "v1")), (("plan_id", "p9"), ("revision", "v2"))}
    view.canaries = canary_facts(view.aggregates.values())
    assert sorted(view.canaries) == ["p9@v1:canary.error_rate", "p9@v2:canary.error_rate"]
    v2 = view.canaries["p9@v2:canary.error_rate"]
    assert (v2.started_at, v2.threshold, v2.plan_id, v2.revision) == (T0 + MIN, 0.1, "p9",
                                                                       "v2")
    (p,) = canary_breach(view, T0 + 2 * MIN)
    assert (p.action, p.plan_id, p.params["revision"], p.params["value"]) == (
        Action.ROLLBACK, "p9", "v2", "0.3")
    # Too few measurements are no evidence; a metric without a limit is not judged.
    few = view_of(_measured("p9", "v3", [0.9] * 2, T0))
    few.canaries = canary_facts(few.aggregates.values())
    assert canary_breach(few, T0 + MIN) == []
    assert canary_facts(view.aggregates.values(), RuleConfig(canary_limits={})) == {}


def test_same_inputs_give_the_same_proposals_and_ids() -> None:
    def build() -> OpsView:
        return view_of(verdicts("p1", 1, 20) + calls("http", 0, 20) + load(30, 0, T0),
                       plans=_plan(T0), pool=PoolFacts(workers=2, idle=1))

    first, second = run_rules(build(), T0 + 6 * MIN), run_rules(build(), T0 + 6 * MIN)
    assert first == second
    assert {p.rule for p in first} == {"stalled_critical_path", "fix_rate_explosion",
                                       "executor_errors", "backlog_worker_target"}
    assert len({p.decision_id for p in first}) == len(first)
