"""Dispatch guards with a movable clock: breaker opens above 50% errors, probes, 429s, budgets."""

from __future__ import annotations

from agents.resilience.breaker import BreakerConfig
from agents.resilience.ratelimit import AimdConfig
from agents.scheduling.guards import Budget, Guards


def guards() -> Guards:
    return Guards(BreakerConfig(minimum_calls=5, window_size=10, open_duration=10.0,
                                half_open_probes=2),
                  AimdConfig(initial_limit=4, max_limit=8, decrease_interval=0.0))


def test_breaker_opens_at_60_percent_errors_and_closes_after_probes() -> None:
    g = guards()
    now = 0.0
    outcomes = [True, True, False, True, False]  # 3 of 5 failed: 60% > 50%
    transitions = []
    for i, failed in enumerate(outcomes):
        assert g.admit(("p", f"t{i}"), "demo", now)
        transitions += g.on_result(("p", f"t{i}"), "demo", failed=failed, now=now)[0]
    assert [t.to_state for t in transitions] == ["open"]
    assert not g.admit(("p", "x"), "demo", 5.0)  # open: nothing dispatched
    assert g.admit(("p", "other"), "http", 5.0)  # other executors are unaffected
    assert g.admit(("p", "probe1"), "demo", 10.5)  # cool-down over: half-open probe
    assert g.admit(("p", "probe2"), "demo", 10.5)
    assert not g.admit(("p", "probe3"), "demo", 10.5)  # only two probes
    trs = g.on_result(("p", "probe1"), "demo", failed=False, now=11.0)[0]
    trs += g.on_result(("p", "probe2"), "demo", failed=False, now=11.0)[0]
    assert [t.to_state for t in trs][-1] == "closed"


def test_exactly_half_failing_does_not_open() -> None:
    g = guards()
    for i, failed in enumerate([False, True, False, True, False, True]):  # ends at 3/6
        g.admit(("p", f"t{i}"), "demo", 0.0)
        assert g.on_result(("p", f"t{i}"), "demo", failed=failed, now=0.0)[0] == []
    assert g.breaker("demo").state == "closed"


def test_rate_limits_shrink_concurrency_and_pause_but_do_not_trip_the_breaker() -> None:
    g = guards()
    for i in range(4):
        assert g.admit(("p", f"t{i}"), "http", 0.0)
    assert not g.admit(("p", "t4"), "http", 0.0)  # limit 4 reached
    _, change = g.on_result(("p", "t0"), "http", failed=True, rate_limited=True,
                            retry_after=2.0, now=1.0)
    assert change is not None and change.new == 2
    assert not g.admit(("p", "t5"), "http", 2.0)  # paused by Retry-After
    assert g.breaker("http").state == "closed"
    for i in (1, 2, 3):
        g.on_result(("p", f"t{i}"), "http", failed=False, now=3.5)
    assert g.admit(("p", "t6"), "http", 3.5)


def test_state_survives_a_restart() -> None:
    g = guards()
    for i in range(5):
        g.admit(("p", f"t{i}"), "demo", 0.0)
        g.on_result(("p", f"t{i}"), "demo", failed=True, now=0.0)
    saved = g.state_of("demo")
    fresh = guards()
    fresh.restore("demo", saved)
    assert fresh.breaker("demo").state == "open"
    assert not fresh.admit(("p", "x"), "demo", 1.0)


def test_budget_from_plan_options() -> None:
    b = Budget.from_options({"budget.tokens": "1000", "budget.cost": "0.5"})
    assert b.exhausted_by(999, 0.1) is None
    assert "token budget" in (b.exhausted_by(1000, 0.1) or "")
    assert "cost budget" in (b.exhausted_by(10, 0.5) or "")
    assert Budget.from_options({}).exhausted_by(10**9, 1e9) is None
