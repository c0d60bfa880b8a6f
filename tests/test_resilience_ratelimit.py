"""AIMD concurrency limiter: decrease on 429s, recover on successes, honour Retry-After."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.resilience.clock import FakeClock
from agents.resilience.ratelimit import AimdConfig, AimdLimiter, LimitChange
from devline.errors import ConfigError


def test_acquire_admits_up_to_the_limit() -> None:
    limiter = AimdLimiter(AimdConfig(initial_limit=2))
    assert limiter.acquire(0.0) and limiter.acquire(0.0)
    assert not limiter.acquire(0.0)
    assert limiter.in_flight == 2
    limiter.release()
    assert limiter.acquire(0.0)
    for _ in range(5):
        limiter.release()
    assert limiter.in_flight == 0  # extra releases cannot make negative slots


def test_rate_limits_halve_the_limit_down_to_the_floor() -> None:
    limiter = AimdLimiter(AimdConfig(initial_limit=8, decrease_interval=1.0))
    clock = FakeClock()
    seen = []
    for _ in range(5):
        limiter.on_rate_limited(clock.now())
        seen.append(limiter.limit)
        clock.advance(1.0)
    assert seen == [4, 2, 1, 1, 1]


def test_a_wave_of_rate_limits_counts_once() -> None:
    limiter = AimdLimiter(AimdConfig(initial_limit=16, decrease_interval=2.0))
    change = limiter.on_rate_limited(10.0)
    assert change == LimitChange(16, 8, "rate limited", 10.0, None)
    assert [limiter.on_rate_limited(t) for t in (10.0, 10.5, 11.9)] == [None] * 3
    assert limiter.limit == 8
    limiter.on_rate_limited(12.0)
    assert limiter.limit == 4


def test_min_limit_is_the_floor() -> None:
    limiter = AimdLimiter(AimdConfig(initial_limit=5, min_limit=3, decrease_interval=0.0))
    for _ in range(4):
        limiter.on_rate_limited(0.0)
    assert limiter.limit == 3


def test_successes_recover_one_step_per_full_window() -> None:
    limiter = AimdLimiter(AimdConfig(initial_limit=2, max_limit=4))
    assert limiter.on_success(0.0) is None
    change = limiter.on_success(0.0)
    assert change == LimitChange(2, 3, "2 successes in a row", 0.0, None)
    assert [limiter.on_success(0.0) for _ in range(3)][-1] == LimitChange(
        3, 4, "3 successes in a row", 0.0, None)
    assert all(limiter.on_success(0.0) is None for _ in range(20))  # capped at max
    assert limiter.limit == 4


def test_a_rate_limit_breaks_the_run_of_successes() -> None:
    limiter = AimdLimiter(AimdConfig(initial_limit=4, decrease_interval=0.0))
    limiter.on_rate_limited(0.0)  # 4 -> 2
    limiter.on_success(0.0)
    limiter.on_rate_limited(1.0)  # 2 -> 1, run reset
    assert limiter.on_success(1.0) == LimitChange(1, 2, "1 successes in a row", 1.0, None)


def test_retry_after_pauses_every_call() -> None:
    limiter = AimdLimiter(AimdConfig(initial_limit=4))
    change = limiter.on_rate_limited(100.0, retry_after=30.0)
    assert change is not None and change.paused_until == 130.0
    assert change.reason == "rate limited, paused for 30s"
    assert not limiter.acquire(100.0) and not limiter.acquire(129.9)
    assert limiter.wait_time(110.0) == 20.0
    assert limiter.acquire(130.0)
    assert limiter.wait_time(131.0) == 0.0


def test_a_shorter_retry_after_does_not_shorten_the_pause() -> None:
    limiter = AimdLimiter(AimdConfig(initial_limit=4, decrease_interval=10.0))
    limiter.on_rate_limited(0.0, retry_after=60.0)
    assert limiter.on_rate_limited(1.0, retry_after=5.0) is None
    assert limiter.paused_until == 60.0
    change = limiter.on_rate_limited(2.0, retry_after=90.0)
    assert change == LimitChange(2, 2, "rate limited, limit unchanged, paused for 90s", 2.0,
                                 92.0)


@pytest.mark.parametrize("junk", [None, 0.0, -3.0, math.nan, math.inf])
def test_junk_retry_after_does_not_pause(junk: float | None) -> None:
    limiter = AimdLimiter()
    limiter.on_rate_limited(0.0, retry_after=junk)
    assert limiter.paused_until is None


def test_retry_after_is_capped() -> None:
    limiter = AimdLimiter(AimdConfig(max_pause=60.0))
    limiter.on_rate_limited(0.0, retry_after=1e9)
    assert limiter.paused_until == 60.0


def test_state_round_trips_and_restart_drops_dead_slots() -> None:
    limiter = AimdLimiter(AimdConfig(initial_limit=4))
    limiter.acquire(0.0)
    limiter.on_rate_limited(0.0, retry_after=10.0)
    limiter.on_success(1.0)
    restored = AimdLimiter.from_dict(json.loads(json.dumps(limiter.to_dict())))
    assert restored.to_dict() == limiter.to_dict()
    restored.reset_in_flight()
    assert restored.in_flight == 0
    narrower = AimdLimiter.from_dict(limiter.to_dict(), AimdConfig(initial_limit=1, max_limit=1))
    assert narrower.limit == 1


@pytest.mark.parametrize("kwargs", [
    {"min_limit": 0}, {"initial_limit": 40}, {"decrease_factor": 1.0},
    {"decrease_factor": 0.0}, {"increase_step": 0}, {"decrease_interval": -1.0},
    {"max_pause": math.inf},
])
def test_bad_configs_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        AimdConfig(**kwargs)  # type: ignore[arg-type]


def test_limit_settles_around_what_the_server_accepts() -> None:
    capacity = 6
    limiter = AimdLimiter(AimdConfig(initial_limit=1, max_limit=32, decrease_interval=0.0))
    clock = FakeClock()
    history = []
    for _ in range(400):
        admitted = 0
        while limiter.acquire(clock.now()):
            admitted += 1
        for i in range(admitted):
            if i < capacity:
                limiter.on_success(clock.now())
            else:
                limiter.on_rate_limited(clock.now())
            limiter.release()
        history.append(limiter.limit)
        clock.advance(1.0)
    settled = history[100:]
    assert max(settled) <= capacity + 1  # probes one past the server's limit
    assert min(settled) >= capacity // 2  # and backs off by half, no further
    assert sum(settled) / len(settled) >= 0.6 * capacity


@given(st.lists(st.tuples(
    st.sampled_from(["acquire", "release", "ok", "429"]),
    st.floats(0.0, 3.0),
    st.none() | st.floats(0.0, 100.0),
), max_size=100))
def test_limit_and_slots_stay_in_bounds(steps: list[tuple[str, float, float | None]]) -> None:
    config = AimdConfig(initial_limit=4, min_limit=1, max_limit=10)
    limiter = AimdLimiter(config)
    clock = FakeClock()
    for op, dt, retry_after in steps:
        now = clock.now()
        before = limiter.limit
        if op == "acquire":
            held = limiter.in_flight
            if limiter.acquire(now):
                assert held < limiter.limit and limiter.wait_time(now) == 0
            else:
                assert held >= limiter.limit or limiter.wait_time(now) > 0
        elif op == "release":
            limiter.release()
        elif op == "ok":
            change = limiter.on_success(now)
            assert limiter.limit >= before
            assert (change is not None) == (limiter.limit != before)
        else:
            limiter.on_rate_limited(now, retry_after)
            assert limiter.limit in (before, max(config.min_limit, before // 2))
            if retry_after:
                assert limiter.wait_time(now) >= min(retry_after, config.max_pause) - 1e-9
        assert config.min_limit <= limiter.limit <= config.max_limit
        assert limiter.in_flight >= 0
        clock.advance(dt)
