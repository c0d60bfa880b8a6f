"""plan_shards: LPT balance by recorded durations, never an empty shard (pure, no I/O)."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.integration import (
    Shard,
    expected_durations,
    ideal_makespan,
    makespan,
    plan_shards,
    round_robin_shards,
)

EPS = 1e-9

test_ids = st.lists(
    st.text(alphabet="abcdef_/:", min_size=1, max_size=12), min_size=0, max_size=40, unique=True
)
seconds = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


@st.composite
def suites(draw: st.DrawFn, max_tests: int = 40) -> tuple[list[str], dict[str, float], int]:
    tests = draw(test_ids.filter(lambda t: len(t) <= max_tests))
    known = draw(st.lists(st.sampled_from(tests), unique=True)) if tests else []
    durations = {t: draw(seconds) for t in known}
    workers = draw(st.integers(min_value=1, max_value=8))
    return tests, durations, workers


@given(suites())
def test_every_test_is_in_exactly_one_shard(suite: tuple[list[str], dict[str, float], int]) -> None:
    tests, durations, workers = suite
    shards = plan_shards(tests, durations, workers)
    placed = [t for s in shards for t in s.tests]
    assert sorted(placed) == sorted(tests)
    assert len(placed) == len(set(placed))


@given(suites())
def test_no_shard_is_empty_and_there_are_min_workers_tests_shards(
        suite: tuple[list[str], dict[str, float], int]) -> None:
    tests, durations, workers = suite
    shards = plan_shards(tests, durations, workers)
    assert len(shards) == min(workers, len(tests))
    assert all(s.tests for s in shards)
    assert [s.index for s in shards] == list(range(len(shards)))


@given(suites())
def test_shards_keep_the_given_order_and_sum_their_expected_durations(
        suite: tuple[list[str], dict[str, float], int]) -> None:
    tests, durations, workers = suite
    expected = expected_durations(tests, durations)
    position = {t: i for i, t in enumerate(tests)}
    for shard in plan_shards(tests, durations, workers):
        assert [position[t] for t in shard.tests] == sorted(position[t] for t in shard.tests)
        assert math.isclose(shard.expected_s, sum(expected[t] for t in shard.tests),
                            rel_tol=1e-9, abs_tol=EPS)


@given(suites())
def test_makespan_is_within_lpt_bound_of_the_lower_bound(
        suite: tuple[list[str], dict[str, float], int]) -> None:
    # LPT's makespan <= total/m + (1 - 1/m) * p_last, and the last job of the heaviest shard
    # has at least m jobs at least as long before it, so makespan <= 2m/(m+1) * max(total/m,
    # longest): 4/3 for two shards, 3/2 for three, approaching 2. The brief's 4/3 * lower
    # bound holds only for m <= 2 (see the counterexample below); against the true optimum
    # LPT is within 4/3 - 1/(3m), checked by brute force in the next test.
    tests, durations, workers = suite
    shards = plan_shards(tests, durations, workers)
    if not shards:
        return
    m = len(shards)
    bound = ideal_makespan(expected_durations(tests, durations).values(), m)
    assert makespan(shards) <= 2 * m / (m + 1) * bound * (1 + EPS) + EPS
    if m <= 2:
        assert makespan(shards) <= 4 / 3 * bound * (1 + EPS) + EPS


@settings(max_examples=300)
@given(st.lists(seconds, min_size=1, max_size=7), st.integers(min_value=1, max_value=3))
def test_makespan_is_within_graham_bound_of_the_optimum(lengths: list[float],
                                                        workers: int) -> None:
    tests = [f"t{i}" for i in range(len(lengths))]
    shards = plan_shards(tests, dict(zip(tests, lengths, strict=True)), workers)
    m = len(shards)
    optimum = min(
        max(sum(d for d, s in zip(lengths, choice, strict=True) if s == k) for k in range(m))
        for choice in itertools.product(range(m), repeat=len(lengths))
    )
    assert makespan(shards) <= (4 / 3 - 1 / (3 * m)) * optimum * (1 + EPS) + EPS


def test_four_equal_tests_on_three_shards_exceed_four_thirds_of_the_lower_bound() -> None:
    shards = plan_shards(["a", "b", "c", "d"], dict.fromkeys("abcd", 1.0), 3)
    assert makespan(shards) == 2.0  # optimal too: some shard must take two tests
    assert makespan(shards) > 4 / 3 * ideal_makespan([1.0] * 4, 3)


@given(suites(), st.randoms(use_true_random=False))
def test_assignment_does_not_depend_on_input_order(
        suite: tuple[list[str], dict[str, float], int], rng: random.Random) -> None:
    tests, durations, workers = suite
    shuffled = list(tests)
    rng.shuffle(shuffled)
    first = {frozenset(s.tests) for s in plan_shards(tests, durations, workers)}
    second = {frozenset(s.tests) for s in plan_shards(shuffled, durations, workers)}
    assert first == second


def test_longest_first_onto_the_least_loaded_shard() -> None:
    durations = {"a": 5.0, "b": 4.0, "c": 3.0, "d": 3.0, "e": 2.0, "f": 1.0}
    shards = plan_shards(list("abcdef"), durations, 2)
    # a->0, b->1, c->1 (4<5), d->0 (5<7), e->1 (7<8)... f->0
    assert shards == [Shard(0, ("a", "d", "f"), 9.0), Shard(1, ("b", "c", "e"), 9.0)]


def test_ties_are_broken_by_test_id_then_shard_index() -> None:
    shards = plan_shards(["z", "y", "x"], dict.fromkeys("xyz", 1.0), 3)
    assert [s.tests for s in shards] == [("x",), ("y",), ("z",)]


def test_fewer_tests_than_workers_makes_fewer_shards() -> None:
    shards = plan_shards(["a", "b"], {}, 8)
    assert [s.tests for s in shards] == [("a",), ("b",)]
    assert plan_shards([], {}, 4) == []


def test_zero_length_tests_still_fill_every_shard() -> None:
    shards = plan_shards(list("abcdef"), dict.fromkeys("abcdef", 0.0), 3)
    assert [len(s.tests) for s in shards] == [2, 2, 2]


def test_a_test_listed_twice_runs_once() -> None:
    shards = plan_shards(["a", "b", "a"], {"a": 2.0, "b": 1.0}, 2)
    assert [s.tests for s in shards] == [("a",), ("b",)]


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers"):
        plan_shards(["a"], {}, 0)


def test_unknown_tests_get_the_median_of_the_known_ones() -> None:
    expected = expected_durations(["a", "b", "c", "new"], {"a": 1.0, "b": 2.0, "c": 9.0})
    assert expected == {"a": 1.0, "b": 2.0, "c": 9.0, "new": 2.0}


def test_unknown_tests_get_one_second_when_nothing_is_known() -> None:
    assert expected_durations(["a", "b"], {}) == {"a": 1.0, "b": 1.0}
    shards = plan_shards(["a", "b", "c"], {}, 2)
    assert [s.expected_s for s in shards] == [2.0, 1.0]


def test_all_new_tests_get_the_median_of_the_recorded_suite() -> None:
    assert expected_durations(["new"], {"old1": 3.0, "old2": 5.0}) == {"new": 4.0}


def test_negative_and_nan_records_count_as_unknown() -> None:
    expected = expected_durations(["a", "b", "c"], {"a": -1.0, "b": math.nan, "c": 4.0})
    assert expected == {"a": 4.0, "b": 4.0, "c": 4.0}


def test_lpt_beats_round_robin_on_a_skewed_suite() -> None:
    tests = [f"t{i:02d}" for i in range(16)]
    durations = {t: (10.0 if i % 4 == 0 else 0.5) for i, t in enumerate(tests)}
    lpt = makespan(plan_shards(tests, durations, 4))
    naive = makespan(round_robin_shards(tests, durations, 4))
    assert lpt == ideal_makespan(durations.values(), 4) == 11.5
    assert naive == 40.0  # every long test dealt to the first shard
