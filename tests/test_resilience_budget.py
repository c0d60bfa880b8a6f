"""Spending budget: tokens and cost, exhaustion reported once, storage."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.resilience.budget import Budget, BudgetExhausted, Remaining
from devline.errors import ConfigError


def test_no_limits_never_exhausts() -> None:
    budget = Budget()
    assert budget.record(10**9, 10**6) is None
    assert not budget.exhausted
    assert budget.remaining == Remaining(None, None)
    assert budget.fraction_used == 0.0


def test_token_limit_exhausts_when_reached() -> None:
    budget = Budget(max_tokens=1000)
    assert budget.record(600) is None
    assert budget.remaining == Remaining(400, None)
    event = budget.record(400)
    assert event == BudgetExhausted("token budget spent: 1000 of 1000", 1000, 0.0)
    assert budget.exhausted and budget.remaining.tokens == 0
    assert budget.record(50) is None  # reported once; spending still counted
    assert budget.tokens == 1050 and budget.remaining.tokens == 0


def test_cost_limit_exhausts_despite_float_sums() -> None:
    budget = Budget(max_cost=0.3)
    budget.record(cost=0.1)
    budget.record(cost=0.1)
    assert not budget.exhausted
    event = budget.record(cost=0.1)  # 0.30000000000000004 in floats
    assert event is not None and event.reason.startswith("cost budget spent")
    budget = Budget(max_cost=0.7)
    for _ in range(7):
        budget.record(cost=0.1)  # sums to 0.7 minus a hair in floats
    assert budget.exhausted


def test_either_limit_exhausts() -> None:
    budget = Budget(max_tokens=100, max_cost=1.0)
    budget.record(10, 0.99)
    assert budget.fraction_used == pytest.approx(0.99)
    assert budget.record(10, 0.02) is not None
    assert budget.remaining == Remaining(80, 0.0)


def test_none_counts_as_nothing() -> None:
    budget = Budget(max_tokens=10, max_cost=1.0)
    assert budget.record(None, None) is None
    assert (budget.tokens, budget.cost) == (0, 0.0)


def test_allows_looks_ahead() -> None:
    budget = Budget(max_tokens=100, max_cost=1.0)
    budget.record(60, 0.5)
    assert budget.allows(40, 0.5)
    assert not budget.allows(41)
    assert not budget.allows(cost=0.51)
    budget.record(40)
    assert not budget.allows()


def test_a_zero_budget_is_spent_from_the_start() -> None:
    assert Budget(max_tokens=0).exhausted
    assert Budget(max_cost=0.0).fraction_used == 1.0


def test_state_round_trips_as_json() -> None:
    budget = Budget(max_tokens=500, max_cost=2.5, tokens=120, cost=0.75)
    restored = Budget.from_dict(json.loads(json.dumps(budget.to_dict())))
    assert restored.to_dict() == budget.to_dict()
    assert restored.remaining == Remaining(380, 1.75)


@pytest.mark.parametrize(("tokens", "cost"), [(-1, 0.0), (0, -0.5), (0, math.nan), (0, math.inf)])
def test_bad_spending_is_refused(tokens: int, cost: float) -> None:
    with pytest.raises(ValueError):
        Budget().record(tokens, cost)


@pytest.mark.parametrize("kwargs", [{"max_tokens": -1}, {"max_cost": -1.0},
                                    {"max_cost": math.nan}])
def test_bad_limits_are_config_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Budget(**kwargs)  # type: ignore[arg-type]


@given(st.integers(0, 10_000), st.lists(st.integers(0, 500), max_size=50))
def test_exhaustion_is_reported_exactly_once_at_the_crossing(limit: int, spends: list[int]) -> None:
    budget = Budget(max_tokens=limit)
    events = []
    total = 0
    for spend in spends:
        was = budget.exhausted
        event = budget.record(spend)
        total += spend
        if event is not None:
            events.append(event)
            assert not was and total >= limit
        assert budget.exhausted == (total >= limit)
        assert budget.remaining.tokens == max(0, limit - total)
    assert len(events) == (1 if total >= limit and limit > 0 else 0)
