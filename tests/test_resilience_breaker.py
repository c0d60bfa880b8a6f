"""Circuit breaker: every transition, thresholds, windows, probes, storage."""

from __future__ import annotations

import json

import pytest

from agents.resilience.breaker import (
    MAX_PENDING,
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    Permit,
    Transition,
)
from agents.resilience.clock import FakeClock
from agents.resilience.window import CountWindow, TimeWindow, window_from_dict
from devline.errors import ConfigError

CLOSED, OPEN, HALF = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def calls(breaker: CircuitBreaker, now: float, outcomes: str) -> list[Transition]:
    """Make one call per character: 'F' fails, 'S' succeeds. Return the transitions."""
    out: list[Transition] = []
    for outcome in outcomes:
        permit = breaker.allow(now)
        assert permit is not None and not permit.probe
        out += breaker.record(now, outcome == "F", permit)
    return out


def opened(clock: FakeClock, **config: object) -> CircuitBreaker:
    """A breaker opened at clock time by a run of failures."""
    cfg = BreakerConfig(**{"minimum_calls": 2, "window_size": 4, **config})  # type: ignore[arg-type]
    breaker = CircuitBreaker("exec", cfg)
    calls(breaker, clock.now(), "F" * cfg.minimum_calls)
    assert breaker.state is OPEN
    return breaker


def roundtrip(breaker: CircuitBreaker) -> CircuitBreaker:
    return CircuitBreaker.from_dict(json.loads(json.dumps(breaker.to_dict())))


# -- CLOSED -> OPEN --------------------------------------------------------------------

def test_starts_closed_and_hands_out_plain_permits() -> None:
    breaker = CircuitBreaker("exec")
    permit = breaker.allow(0.0)
    assert breaker.state is CLOSED
    assert permit == Permit("exec", False, 0, 0, 0.0)


def test_minimum_calls_are_respected() -> None:
    breaker = CircuitBreaker("exec", BreakerConfig(minimum_calls=5, window_size=10))
    assert calls(breaker, 0.0, "FFFF") == []
    assert breaker.state is CLOSED
    [transition] = calls(breaker, 1.0, "F")
    assert transition == Transition("exec", CLOSED, OPEN, "5/5 calls failed, above 50%",
                                    1.0, 5, 1.0)
    assert breaker.open_until == 31.0


def test_exactly_half_failing_does_not_open() -> None:
    breaker = CircuitBreaker("exec", BreakerConfig(minimum_calls=10, window_size=10))
    assert calls(breaker, 0.0, "FSFSFSFSFS") == []
    assert breaker.window_totals(0.0) == (10, 5)
    assert breaker.state is CLOSED


def test_fifty_one_percent_opens_fifty_does_not() -> None:
    config = BreakerConfig(minimum_calls=100, window_size=100)
    fifty = CircuitBreaker("a", config)
    assert calls(fifty, 0.0, "F" * 50 + "S" * 50) == []
    fifty_one = CircuitBreaker("b", config)
    [transition] = calls(fifty_one, 0.0, "F" * 51 + "S" * 49)
    assert (transition.error_rate, transition.calls) == (0.51, 100)


@pytest.mark.parametrize(("threshold", "fails", "total", "opens"), [
    (0.7, 7, 10, False), (0.7, 8, 10, True), (0.1, 1, 10, False), (0.1, 2, 10, True),
    (0.3, 3, 10, False), (0.0, 1, 10, True), (0.0, 0, 10, False),
])
def test_threshold_is_strictly_greater(
    threshold: float, fails: int, total: int, opens: bool,
) -> None:
    breaker = CircuitBreaker("x", BreakerConfig(failure_rate_threshold=threshold,
                                                minimum_calls=total, window_size=total))
    calls(breaker, 0.0, "S" * (total - fails) + "F" * fails)
    assert (breaker.state is OPEN) is opens


def test_count_window_forgets_the_oldest_calls() -> None:
    breaker = CircuitBreaker("exec", BreakerConfig(minimum_calls=4, window_size=4))
    calls(breaker, 0.0, "FFSS")  # 2/4: closed
    calls(breaker, 0.0, "SS")  # window now SSSS
    assert breaker.window_totals(0.0) == (4, 0)
    assert calls(breaker, 0.0, "FF") == []  # SSFF: 50%
    assert calls(breaker, 0.0, "F")[0].error_rate == 0.75  # SFFF


def test_time_window_expires_old_calls() -> None:
    config = BreakerConfig(window="time", window_seconds=10.0, bucket_seconds=1.0,
                           minimum_calls=4)
    breaker = CircuitBreaker("exec", config)
    calls(breaker, 0.0, "FFF")
    assert breaker.window_totals(9.99) == (3, 3)
    assert breaker.window_totals(10.0) == (0, 0)
    assert calls(breaker, 10.0, "F") == []  # the three old failures no longer count
    assert calls(breaker, 12.5, "FFF")[0].calls == 4


def test_time_window_memory_is_bounded_by_buckets() -> None:
    window = TimeWindow(60.0, 1.0)
    for i in range(10_000):
        window.add(i * 0.01, i % 3 == 0)
    assert len(window.to_dict()["buckets"]) <= 60
    assert window.totals(99.99)[0] == 6000  # buckets 40..99
    assert window.totals(100.0)[0] == 5900  # bucket 40 aged out
    window.add(50.0, True)  # a stepped-back clock lands in the newest bucket
    assert window.to_dict()["buckets"][-1] == [99, 101, 35]


def test_windows_round_trip_through_dicts() -> None:
    count = CountWindow(3, [1, 0, 1, 1])
    assert count.totals(0) == (3, 2)
    assert window_from_dict(count.to_dict()).to_dict() == count.to_dict()
    time_window = TimeWindow(0.3, 0.1)
    assert time_window.slots == 3
    time_window.add(0.05, True)
    assert window_from_dict(time_window.to_dict()).totals(0.05) == (1, 1)
    with pytest.raises(ValueError):
        window_from_dict({"kind": "ring"})


def test_the_call_that_reaches_minimum_calls_can_open_even_if_it_succeeds() -> None:
    breaker = CircuitBreaker("exec", BreakerConfig(minimum_calls=3, window_size=3))
    calls(breaker, 0.0, "FF")
    assert calls(breaker, 0.0, "S")[0].error_rate == pytest.approx(2 / 3)


# -- OPEN -> HALF_OPEN -----------------------------------------------------------------

def test_open_refuses_until_the_cool_down_ends() -> None:
    clock = FakeClock(100.0)
    breaker = opened(clock, open_duration=30.0)
    for t in (100.0, 110.0, 129.999):
        assert breaker.allow(t) is None
        assert breaker.state is OPEN
    permit = breaker.allow(130.0)
    assert permit is not None and permit.probe
    assert breaker.state is HALF
    assert [(t.from_state, t.to_state, t.reason, t.at) for t in breaker.drain()] == [
        (CLOSED, OPEN, "2/2 calls failed, above 50%", 100.0),
        (OPEN, HALF, "cool-down elapsed", 130.0),
    ]
    assert breaker.drain() == []


def test_tick_moves_open_to_half_open_without_a_call() -> None:
    breaker = opened(FakeClock())
    assert breaker.tick(29.0) == []
    [transition] = breaker.tick(30.0)
    assert (transition.from_state, transition.to_state) == (OPEN, HALF)
    assert breaker.open_until is None


def test_outcomes_reported_while_open_are_ignored() -> None:
    breaker = CircuitBreaker("exec", BreakerConfig(minimum_calls=2, window_size=4))
    slow = breaker.allow(0.0)
    calls(breaker, 0.0, "FF")
    assert breaker.record_success(1.0, slow) == []
    assert breaker.record_failure(1.0) == []
    assert breaker.state is OPEN and breaker.window_totals(1.0) == (0, 0)


# -- HALF_OPEN -> CLOSED / OPEN ---------------------------------------------------------

def half_open(probes: int = 3, **config: object) -> tuple[CircuitBreaker, list[Permit]]:
    breaker = opened(FakeClock(), half_open_probes=probes, **config)
    permits = [breaker.allow(30.0) for _ in range(probes)]
    assert all(p is not None and p.probe for p in permits)
    assert breaker.allow(30.0) is None  # every probe handed out
    assert breaker.outstanding_probes == probes
    return breaker, [p for p in permits if p is not None]


def test_probes_that_all_succeed_close_the_breaker() -> None:
    breaker, (a, b, c) = half_open()
    assert breaker.record_success(31.0, a) == []
    [transition] = breaker.record_success(32.0, b)  # 0 of 3 failed so far, 1 left: certain
    assert (transition.from_state, transition.to_state) == (HALF, CLOSED)
    assert transition.reason == "0 of 3 probes failed"
    assert breaker.record_failure(33.0, c) == []  # the last probe's era has passed
    assert breaker.window_totals(33.0) == (0, 0)
    # Eras: 0 closed, 1 open, 2 half-open, 3 closed again.
    assert breaker.allow(33.0) == Permit("exec", False, 3, 0, 33.0)


def test_one_failed_probe_in_three_still_closes() -> None:
    breaker, (a, b, c) = half_open()
    assert breaker.record_failure(31.0, a) == []
    assert breaker.record_success(32.0, b) == []  # c failing would make 2 of 3
    assert breaker.record_success(33.0, c)[0].to_state is CLOSED


def test_failed_probes_reopen_for_another_cool_down() -> None:
    breaker, (a, b, _c) = half_open()
    assert breaker.record_failure(31.0, a) == []
    [transition] = breaker.record_failure(32.0, b)
    assert (transition.from_state, transition.to_state) == (HALF, OPEN)
    assert (transition.reason, transition.error_rate, transition.calls) == (
        "2 of 3 probes failed (probe failed)", 1.0, 2)
    assert breaker.open_until == 62.0
    assert breaker.allow(61.9) is None
    assert breaker.allow(62.0) is not None and breaker.state is HALF


def test_the_decision_waits_only_while_the_outcome_is_open() -> None:
    breaker, (a, b) = half_open(probes=2)
    assert breaker.record_failure(31.0, a) == []  # 1/2 or 2/2 still possible
    assert breaker.record_success(32.0, b)[0].to_state is CLOSED  # 1/2 is not above 50%
    breaker, (a, _b) = half_open(probes=2)
    assert breaker.record_success(31.0, a)[0].to_state is CLOSED  # at worst 1/2


def test_a_single_probe_decides_alone() -> None:
    breaker, [probe] = half_open(probes=1)
    assert breaker.record_failure(31.0, probe)[0].to_state is OPEN
    breaker, [probe] = half_open(probes=1)
    assert breaker.record_success(31.0, probe)[0].to_state is CLOSED


def test_a_hung_probe_times_out_as_a_failure() -> None:
    breaker, [probe] = half_open(probes=1, probe_timeout=60.0)
    assert breaker.tick(89.9) == []
    [transition] = breaker.tick(90.0)
    assert transition.to_state is OPEN
    assert transition.reason == "1 of 1 probes failed (probe timed out after 60s)"
    assert breaker.record_success(91.0, probe) == []  # too late to count
    assert breaker.state is OPEN


def test_probe_timeout_is_checked_on_allow_and_record_too() -> None:
    breaker, (a, *_) = half_open(probe_timeout=10.0)
    breaker.record_success(31.0, a)
    assert breaker.allow(40.0) is None  # b and c both overdue: 2 of 3 failed -> reopen
    assert breaker.state is OPEN
    breaker, (a, *_) = half_open(probe_timeout=10.0)
    [transition] = breaker.record_success(45.0, a)  # a is overdue too: all three failed
    assert transition.to_state is OPEN


def test_duplicate_and_stale_reports_do_not_count_twice() -> None:
    breaker, (a, b) = half_open(probes=2)
    breaker.record_failure(31.0, a)
    assert breaker.record_failure(31.0, a) == []  # redelivered: still one failure
    assert breaker.state is HALF
    assert breaker.record_success(32.0, b)[0].to_state is CLOSED


def test_report_without_permit_credits_the_oldest_probe() -> None:
    breaker, _ = half_open(probes=3)
    assert breaker.record_success(31.0) == []
    assert breaker.outstanding_probes == 2
    assert breaker.record_failure(31.0) == []
    assert breaker.to_dict()["probes"] == [[2, 30.0]]
    assert breaker.record_success(31.0)[0].to_state is CLOSED


def test_a_cancelled_probe_frees_its_slot_without_counting() -> None:
    breaker, (a, b) = half_open(probes=2)
    assert breaker.cancel(30.0, a) == []
    assert breaker.outstanding_probes == 1
    assert breaker.cancel(30.0, a) == []  # twice is harmless
    c = breaker.allow(30.0)
    assert c is not None and c.seq == 2  # numbers are not reused
    assert breaker.allow(30.0) is None
    assert breaker.record_failure(31.0, a) == []  # a was cancelled: its report is stale
    assert breaker.record_success(31.0, c)[0].to_state is CLOSED
    assert breaker.cancel(32.0, b) == []


def test_undrained_transitions_are_bounded() -> None:
    breaker = CircuitBreaker("exec", BreakerConfig(minimum_calls=1, window_size=1,
                                                   open_duration=1.0, half_open_probes=1))
    t = 0.0
    for _ in range(100):
        calls(breaker, t, "F")
        t += 1.0
        probe = breaker.allow(t)
        breaker.record_success(t, probe)
    pending = breaker.drain()
    assert len(pending) == MAX_PENDING
    assert pending[-1].to_state is CLOSED and pending[-1].at == 100.0


def test_permit_from_another_breaker_is_a_bug() -> None:
    breaker = CircuitBreaker("a")
    with pytest.raises(ValueError):
        breaker.record_success(0.0, Permit("b", False, 0, 0, 0.0))


def test_permits_travel_as_dicts() -> None:
    _, [probe, *_] = half_open()
    assert Permit.from_dict(json.loads(json.dumps(probe.to_dict()))) == probe


# -- time, storage, config -------------------------------------------------------------

def test_a_stepped_back_clock_cannot_reopen_the_window() -> None:
    breaker = opened(FakeClock(100.0))
    assert breaker.allow(50.0) is None  # treated as 100.0
    assert breaker.open_until == 130.0


@pytest.mark.parametrize("stage", ["closed", "open", "half_open"])
def test_state_round_trips_mid_flight(stage: str) -> None:
    config = BreakerConfig(minimum_calls=3, window_size=5, half_open_probes=3)
    breaker = CircuitBreaker("exec", config)
    calls(breaker, 0.0, "SSF")
    probes: list[Permit] = []
    if stage != "closed":
        calls(breaker, 1.0, "FF")
    if stage == "half_open":
        probes = [p for p in (breaker.allow(31.0), breaker.allow(32.0)) if p is not None]
    data = breaker.to_dict()
    clone = roundtrip(breaker)
    assert clone.to_dict() == data
    assert clone.state is breaker.state
    # The clone and the original answer the same from here on.
    for twin in (breaker, clone):
        for permit in probes:
            twin.record_success(40.0, permit)
        twin.record_failure(40.0)
        twin.allow(100.0)
        twin.tick(1000.0)
    assert clone.to_dict() == breaker.to_dict()


def test_pending_transitions_survive_a_restart() -> None:
    breaker = opened(FakeClock())
    clone = roundtrip(breaker)
    assert [t.to_dict() for t in clone.drain()] == [t.to_dict() for t in breaker.drain()]


def test_time_window_state_round_trips() -> None:
    config = BreakerConfig(window="time", window_seconds=5.0, minimum_calls=10)
    breaker = CircuitBreaker("exec", config)
    calls(breaker, 1.2, "FSF")
    calls(breaker, 3.7, "F")
    clone = roundtrip(breaker)
    assert clone.window_totals(4.0) == (4, 3)
    assert clone.window_totals(6.5) == (1, 1)


def test_a_new_config_with_another_window_shape_restarts_the_window() -> None:
    breaker = CircuitBreaker("exec", BreakerConfig(minimum_calls=10, window_size=10))
    calls(breaker, 0.0, "FFF")
    same = CircuitBreaker.from_dict(breaker.to_dict(), BreakerConfig(minimum_calls=5,
                                                                     window_size=10))
    assert same.window_totals(0.0) == (3, 3)
    other = CircuitBreaker.from_dict(breaker.to_dict(), BreakerConfig(window="time"))
    assert other.window_totals(0.0) == (0, 0)
    assert other.config.window == "time"


def test_an_open_record_without_a_deadline_probes_at_once() -> None:
    data = opened(FakeClock(5.0)).to_dict() | {"open_until": None}
    breaker = CircuitBreaker.from_dict(data)
    assert breaker.allow(5.0) is not None
    assert breaker.state is HALF


def test_config_round_trips_and_tolerates_unknown_keys() -> None:
    config = BreakerConfig(window="time", half_open_probes=1)
    assert BreakerConfig.from_dict(config.to_dict() | {"future": 1}) == config


@pytest.mark.parametrize("kwargs", [
    {"failure_rate_threshold": 1.0}, {"failure_rate_threshold": -0.1}, {"minimum_calls": 0},
    {"window_size": 0}, {"half_open_probes": 0}, {"window": "sliding"},
    {"open_duration": 0.0}, {"probe_timeout": float("inf")},
    {"window_seconds": 1.0, "bucket_seconds": 2.0},
])
def test_bad_configs_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]


def test_nan_time_is_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("exec").allow(float("nan"))
