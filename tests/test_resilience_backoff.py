"""Backoff schedule, jitter bounds, retry tiers, the retry decision, and the clocks."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.resilience.backoff import BackoffPolicy, tier_for
from agents.resilience.clock import FakeClock, SystemClock
from devline.errors import ConfigError, ExecutorError

policies = st.builds(
    BackoffPolicy,
    initial=st.floats(0.0, 100.0),
    multiplier=st.floats(1.0, 10.0),
    max_interval=st.floats(100.0, 10_000.0),
    jitter=st.sampled_from(["full", "equal", "none"]),
    max_attempts=st.integers(1, 20),
)
attempts = st.integers(1, 5_000)


# -- clocks ----------------------------------------------------------------------------

def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(10.0)
    assert clock.now() == 10.0
    assert clock.advance(2.5) == 12.5
    assert clock.now() == 12.5
    assert clock.set(3.0) == 3.0
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.set(math.nan)


def test_system_clock_never_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([100.0, 99.0, 101.0])
    monkeypatch.setattr("agents.resilience.clock.time.time", lambda: next(readings))
    clock = SystemClock()
    assert [clock.now(), clock.now(), clock.now()] == [100.0, 100.0, 101.0]


# -- schedule --------------------------------------------------------------------------

def test_unjittered_schedule_doubles_then_caps() -> None:
    policy = BackoffPolicy(initial=1.0, multiplier=2.0, max_interval=60.0, jitter="none")
    assert [policy.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_schedule_lists_one_delay_per_retry() -> None:
    policy = BackoffPolicy(jitter="none", max_attempts=4)
    assert policy.schedule() == [1.0, 2.0, 4.0]
    assert BackoffPolicy(max_attempts=1).schedule() == []


def test_full_and_equal_jitter_with_a_known_draw() -> None:
    class Half(random.Random):
        def random(self) -> float:
            return 0.5

    assert BackoffPolicy(jitter="full").delay(3, Half()) == 2.0  # uniform over [0, 4)
    assert BackoffPolicy(jitter="equal").delay(3, Half()) == 3.0  # uniform over [2, 4)


def test_huge_attempt_does_not_overflow() -> None:
    policy = BackoffPolicy(multiplier=10.0, max_interval=60.0, jitter="none")
    assert policy.delay(10**6) == 60.0


def test_attempts_start_at_one() -> None:
    with pytest.raises(ValueError):
        BackoffPolicy().delay(0)


@pytest.mark.parametrize("kwargs", [
    {"initial": -1.0}, {"multiplier": 0.5}, {"max_interval": 0.5}, {"jitter": "some"},
    {"max_attempts": 0}, {"initial": math.inf}, {"max_retry_after": math.nan},
])
def test_bad_policies_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        BackoffPolicy(**kwargs)  # type: ignore[arg-type]


@given(policies, attempts, st.integers())
def test_delay_within_zero_and_max_interval(policy: BackoffPolicy, attempt: int, seed: int) -> None:
    delay = policy.delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= policy.max_interval


@given(policies, attempts, st.integers())
def test_jitter_within_its_bounds(policy: BackoffPolicy, attempt: int, seed: int) -> None:
    base = policy.base(attempt)
    low, high = policy.bounds(attempt)
    delay = policy.delay(attempt, random.Random(seed))
    assert low <= delay <= high
    expected_low = {"full": 0.0, "equal": base / 2, "none": base}[policy.jitter]
    assert (low, high) == (expected_low, base)


@given(policies, attempts)
def test_expected_delay_never_decreases(policy: BackoffPolicy, attempt: int) -> None:
    assert policy.expected(attempt + 1) >= policy.expected(attempt)
    assert policy.base(attempt + 1) >= policy.base(attempt)


@given(policies, st.integers())
def test_seeded_schedule_is_deterministic(policy: BackoffPolicy, seed: int) -> None:
    first = [policy.delay(n, random.Random(seed)) for n in range(1, 12)]
    again = [policy.delay(n, random.Random(seed)) for n in range(1, 12)]
    assert first == again
    assert policy.schedule(random.Random(seed)) == policy.schedule(random.Random(seed))


def test_full_jitter_mean_is_half_the_base() -> None:
    policy = BackoffPolicy(jitter="full")
    rng = random.Random(7)
    mean = sum(policy.delay(4, rng) for _ in range(20_000)) / 20_000
    assert mean == pytest.approx(policy.expected(4), rel=0.03)
    assert policy.expected(4) == 4.0


# -- Retry-After -----------------------------------------------------------------------

@given(policies, attempts, st.floats(0.0, 3600.0), st.integers())
def test_retry_after_is_a_floor(
    policy: BackoffPolicy, attempt: int, retry_after: float, seed: int,
) -> None:
    plain = policy.delay(attempt, random.Random(seed))
    floored = policy.delay(attempt, random.Random(seed), retry_after=retry_after)
    assert floored == max(plain, retry_after)


@pytest.mark.parametrize("junk", [None, -5.0, 0.0, math.nan])
def test_junk_retry_after_is_ignored(junk: float | None) -> None:
    assert BackoffPolicy(jitter="none").delay(2, retry_after=junk) == 2.0


def test_retry_after_is_capped() -> None:
    policy = BackoffPolicy(jitter="none", max_retry_after=600.0)
    assert policy.delay(1, retry_after=1e9) == 600.0
    assert policy.delay(1, retry_after=math.inf) == 600.0


# -- tiers -----------------------------------------------------------------------------

@pytest.mark.parametrize(("delay", "tier"), [
    (0.0, 1), (0.3, 1), (1.0, 1), (1.01, 5), (5.0, 5), (29.9, 30), (31, 120), (120, 120),
    (500, 120),
])
def test_tier_is_smallest_at_least_delay(delay: float, tier: float) -> None:
    assert tier_for(delay, [1, 5, 30, 120]) == tier


def test_tiers_need_not_be_sorted_but_must_exist() -> None:
    assert tier_for(3.0, [30, 1, 5]) == 5
    with pytest.raises(ConfigError):
        tier_for(1.0, [])
    with pytest.raises(ConfigError):
        tier_for(1.0, [-1, 5])


@given(st.floats(0.0, 1e6), st.lists(st.floats(0.0, 1e4), min_size=1, max_size=8))
def test_tier_never_retries_early_unless_capped(delay: float, tiers: list[float]) -> None:
    tier = tier_for(delay, tiers)
    assert tier in tiers
    if delay <= max(tiers):
        assert tier >= delay
        assert all(t < delay or t >= tier for t in tiers)
    else:
        assert tier == max(tiers)


# -- decide ----------------------------------------------------------------------------

def test_decide_retries_until_max_attempts_then_dead_letters() -> None:
    policy = BackoffPolicy(jitter="none", max_attempts=3)
    first = policy.decide(1, True, "boom")
    assert first.retry and not first.dead_letter
    assert (first.delay, first.next_attempt) == (1.0, 2)
    assert first.reason == "retry 2/3 in 1.000s: boom"
    second = policy.decide(2, True, "boom")
    assert second.retry and second.delay == 2.0
    last = policy.decide(3, True, "boom")
    assert last.dead_letter and last.delay == 0.0
    assert last.reason == "attempts exhausted (3/3): boom"
    assert policy.decide(7, True).dead_letter


def test_decide_dead_letters_what_cannot_be_retried() -> None:
    decision = BackoffPolicy().decide(1, False, ValueError("bad plan"))
    assert decision.dead_letter
    assert decision.reason == "not retryable: ValueError: bad plan"


def test_decide_uses_the_errors_retry_after_and_names_the_tier() -> None:
    error = ExecutorError("429", retryable=True, retry_after=20.0)
    decision = BackoffPolicy(jitter="none").decide(1, error.retryable, error, tiers=[1, 5, 30])
    assert decision.delay == 20.0
    assert decision.tier == 30
    assert decision.to_dict() == {"retry": True, "attempt": 1, "reason": decision.reason,
                                  "delay": 20.0, "tier": 30}


def test_decide_is_deterministic_with_a_seed() -> None:
    policy = BackoffPolicy(max_attempts=5)
    runs = [[policy.decide(n, True, rng=random.Random(3)) for n in range(1, 5)] for _ in "ab"]
    assert runs[0] == runs[1]


def test_decide_bounds_long_reasons() -> None:
    decision = BackoffPolicy().decide(1, False, "x" * 10_000)
    assert len(decision.reason) == 500
