"""Autoscaler policy: fast up, slow down, no flapping, hysteresis, storage."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.resilience.autoscale import AutoscaleConfig, Autoscaler, ScaleDecision
from agents.resilience.clock import FakeClock
from devline.errors import ConfigError


def simulate(
    scaler: Autoscaler, loads: list[int], start: int, every: float = 15.0,
) -> list[ScaleDecision]:
    """Apply each decision as the supervisor would; one observation every `every` seconds."""
    clock = FakeClock()
    current = start
    decisions = []
    for load in loads:
        decision = scaler.decide(clock.now(), current, backlog=load, in_flight=0)
        decisions.append(decision)
        current = decision.desired
        clock.advance(every)
    return decisions


def changes(decisions: list[ScaleDecision]) -> int:
    return sum(1 for d in decisions if d.changed)


def test_recommendation_is_ceil_of_load_over_target_clamped() -> None:
    scaler = Autoscaler(AutoscaleConfig(target_per_worker=2.0))
    assert scaler.recommend(backlog=5, in_flight=2) == 4  # ceil(7 / 2)
    assert scaler.recommend(backlog=0, in_flight=0) == 2  # min
    assert scaler.recommend(backlog=500, in_flight=9) == 10  # max
    assert Autoscaler(AutoscaleConfig(target_per_worker=0.1)).recommend(0, 3) == 10
    assert Autoscaler(AutoscaleConfig(target_per_worker=3.0)).recommend(9, 0) == 3


def test_a_burst_scales_to_max_at_once() -> None:
    decision = Autoscaler().decide(0.0, current=2, backlog=80, in_flight=2)
    assert decision == ScaleDecision(2, 10, "scale up: load 82 wants 10", 10, 0.0)
    assert decision.changed


def test_scale_up_step_limits_each_move() -> None:
    scaler = Autoscaler(AutoscaleConfig(max_scale_up_step=3))
    assert [d.desired for d in simulate(scaler, [50] * 4, start=2)] == [5, 8, 10, 10]


def test_idle_returns_to_min_only_after_the_window() -> None:
    scaler = Autoscaler(AutoscaleConfig(scale_down_window=300.0))
    decisions = simulate(scaler, [100] + [0] * 40, start=2)
    desired = [(d.at, d.desired) for d in decisions]
    assert desired[0] == (0.0, 10)
    assert all(n == 10 for t, n in desired if t < 300.0)
    assert dict(desired)[300.0] == 2
    held = decisions[1]
    assert held.reason == "hold: 10 wanted within the last 300s"
    assert (held.current, held.desired, held.recommended) == (10, 10, 2)


def test_scale_down_step_shrinks_gradually() -> None:
    scaler = Autoscaler(AutoscaleConfig(scale_down_window=60.0, max_scale_down_step=3))
    decisions = simulate(scaler, [100] + [0] * 10, start=10)
    assert [d.desired for d in decisions if d.at >= 60.0][:4] == [7, 4, 2, 2]


def test_a_fresh_start_waits_a_window_before_shrinking() -> None:
    scaler = Autoscaler(AutoscaleConfig(scale_down_window=120.0))
    assert scaler.decide(0.0, current=8, backlog=0, in_flight=0).desired == 8
    assert scaler.decide(119.0, current=8, backlog=0, in_flight=0).desired == 8
    assert scaler.decide(120.0, current=8, backlog=0, in_flight=0).desired == 2


def test_oscillating_backlog_does_not_flap() -> None:
    rng = random.Random(42)
    # Two hours of a noisy load swinging between about 2 and 9 tasks every minute or so.
    loads = [max(0, (9 if (i // 4) % 2 else 2) + rng.randint(-2, 2)) for i in range(480)]
    damped = simulate(Autoscaler(), loads, start=2)
    raw = simulate(Autoscaler(AutoscaleConfig(scale_down_window=0.0, tolerance=0.0)),
                   loads, start=2)
    assert changes(raw) > 50  # without damping the pool would follow every swing
    assert changes(damped) <= 3
    assert all(2 <= d.desired <= 10 for d in damped)


def test_tolerance_band_absorbs_small_changes() -> None:
    config = AutoscaleConfig(max_replicas=20, tolerance=0.1, scale_down_window=0.0)
    scaler = Autoscaler(config)
    for load in (9, 10, 11):
        decision = scaler.decide(0.0, current=10, backlog=load, in_flight=0)
        assert decision.desired == 10
    assert scaler.decide(0.0, 10, 11, 0).reason == "load 11 within 10% of capacity 10"
    assert scaler.decide(0.0, current=10, backlog=12, in_flight=0).desired == 12
    assert scaler.decide(1.0, current=10, backlog=8, in_flight=0).desired == 8


def test_counts_outside_the_bounds_move_back_at_once() -> None:
    scaler = Autoscaler()
    assert scaler.decide(0.0, current=0, backlog=0, in_flight=0).desired == 2
    assert scaler.decide(0.0, current=1, backlog=5, in_flight=0).desired == 5
    assert scaler.decide(0.0, current=15, backlog=40, in_flight=0).desired == 10
    assert scaler.decide(0.0, current=15, backlog=0, in_flight=0).desired == 10


def test_state_round_trips_mid_window() -> None:
    scaler = Autoscaler(AutoscaleConfig(scale_down_window=300.0))
    scaler.decide(0.0, current=2, backlog=100, in_flight=0)
    scaler.decide(100.0, current=10, backlog=0, in_flight=0)
    restored = Autoscaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert restored.to_dict() == scaler.to_dict()
    assert restored.decide(200.0, current=10, backlog=0, in_flight=0).desired == 10
    assert restored.decide(300.0, current=10, backlog=0, in_flight=0).desired == 2
    other = Autoscaler.from_dict(scaler.to_dict(), AutoscaleConfig(scale_down_window=0.0))
    assert other.decide(200.0, current=10, backlog=0, in_flight=0).desired == 2


def test_history_stays_small() -> None:
    scaler = Autoscaler(AutoscaleConfig(scale_down_window=10_000.0))
    rng = random.Random(1)
    for i in range(5_000):
        scaler.decide(float(i), current=rng.randint(2, 10), backlog=rng.randint(0, 20),
                      in_flight=0)
    assert len(scaler.to_dict()["history"]) <= 9  # one per distinct size at most


def test_a_stepped_back_clock_does_not_shorten_the_window() -> None:
    scaler = Autoscaler(AutoscaleConfig(scale_down_window=100.0))
    scaler.decide(1000.0, current=2, backlog=50, in_flight=0)
    assert scaler.decide(500.0, current=10, backlog=0, in_flight=0).at == 1000.0


@pytest.mark.parametrize("kwargs", [
    {"min_replicas": 5, "max_replicas": 4}, {"max_replicas": 0, "min_replicas": 0},
    {"target_per_worker": 0.0}, {"tolerance": 1.0}, {"scale_down_window": -1.0},
    {"max_scale_up_step": 0}, {"max_scale_down_step": 0},
])
def test_bad_configs_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        AutoscaleConfig(**kwargs)  # type: ignore[arg-type]


def test_negative_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        Autoscaler().decide(0.0, current=2, backlog=-1, in_flight=0)


@given(
    st.lists(st.tuples(st.floats(0.0, 120.0), st.integers(0, 40), st.integers(0, 12)),
             max_size=60),
    st.integers(0, 12),
    st.sampled_from([0.0, 0.1, 0.3]),
    st.sampled_from([0.0, 60.0, 300.0]),
)
def test_pool_moves_fast_up_and_slow_down(
    steps: list[tuple[float, int, int]], start: int, tolerance: float, window: float,
) -> None:
    config = AutoscaleConfig(tolerance=tolerance, scale_down_window=window)
    scaler = Autoscaler(config)
    clock = FakeClock()
    current = start
    last_rise = 0.0  # the first observation counts as one: nothing known before it
    for dt, backlog, in_flight in steps:
        now = clock.now()
        d = scaler.decide(now, current, backlog, in_flight)
        assert config.min_replicas <= d.desired <= config.max_replicas
        in_bounds = config.min_replicas <= current <= config.max_replicas
        if in_bounds and d.recommended > current * (1 + tolerance):
            assert d.desired == d.recommended  # up at once
        if d.desired < current and in_bounds:
            assert now - last_rise >= window  # down only a full window after the last rise
        if d.desired > current:
            last_rise = now
        current = d.desired
        clock.advance(dt)
