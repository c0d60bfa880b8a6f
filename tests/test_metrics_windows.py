"""Window arithmetic, the dimension policy and the sketch's accuracy and JSON form."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.metrics import (
    OTHER,
    Aggregate,
    Aggregator,
    DimensionPolicy,
    Point,
    Sketch,
    WindowSpec,
    merge,
    window_starts,
)
from devline.errors import ConfigError

T0 = 1_700_000_040_000  # a minute boundary


def test_tumbling_window_has_one_start() -> None:
    assert window_starts(T0 + 59_999, WindowSpec(60)) == [T0]
    assert window_starts(T0 + 60_000, WindowSpec(60)) == [T0 + 60_000]


def test_hopping_window_lists_every_window_containing_the_point() -> None:
    starts = window_starts(T0 + 30_000, WindowSpec(300, 60))
    assert starts == [T0 - 240_000, T0 - 180_000, T0 - 120_000, T0 - 60_000, T0]
    assert all(s <= T0 + 30_000 < s + 300_000 for s in starts)


@given(st.integers(0, 2**42), st.sampled_from([(60, None), (300, 60), (300, 300), (120, 30)]))
def test_window_starts_are_exactly_the_containing_windows(at: int, shape: tuple[int, int | None]
                                                          ) -> None:
    spec = WindowSpec(shape[0], shape[1])
    starts = window_starts(at, spec)
    assert len(starts) == spec.size_ms // spec.hop_ms
    assert all(s % spec.hop_ms == 0 and s <= at < s + spec.size_ms for s in starts)


@pytest.mark.parametrize("args", [(0,), (60, 0), (60, 120), (60, 25), (60, None, -1)])
def test_bad_specs_are_refused(args: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError):
        WindowSpec(*args)  # type: ignore[arg-type]


def test_max_open_windows_per_spec() -> None:
    assert WindowSpec(60, None, 10).max_open == 2
    assert WindowSpec(300, 60, 10).max_open == 6


def test_policy_keeps_allowed_labels_and_drops_paths_and_ids() -> None:
    policy = DimensionPolicy()
    labels = {"chain": "python", "passed": "false", "plan_id": "p1", "path": "a/b.py",
              "task_id": "t9"}
    assert policy.kept("qa.verdicts", labels) == (
        ("chain", "python"), ("passed", "false"), ("plan_id", "p1"))
    # Unknown metric: only low-cardinality label names survive.
    assert policy.kept("new.metric", {"executor": "demo", "path": "x", "worker_id": "w"}) == (
        ("executor", "demo"),)
    assert policy.kept("backlog", {"executor": "demo"}) == ()
    assert policy.kept("new.metric", {"status": "x" * 500}) == (("status", "x" * 64),)


def _p(name: str, value: float, at: int, **labels: str) -> Point:
    return Point("test", name, value, at, labels)


def test_series_cap_folds_new_series_into_other_and_ttl_frees_slots() -> None:
    policy = DimensionPolicy(max_series=3, series_ttl_s=600)
    agg = Aggregator([WindowSpec(60)], policy)
    for i in range(5):
        agg.add(_p("qa.verdicts", 1, T0 + i, plan_id=f"p{i}"), T0)
    out = agg.tick(T0 + 200_000)
    plans = sorted(a.dim("plan_id") or "" for a in out)
    assert plans == [OTHER, "p0", "p1", "p2"]
    assert next(a for a in out if a.dim("plan_id") == OTHER).count == 2
    # An hour of event time later, quiet series give their slots back.
    late = T0 + 700_000
    agg.add(_p("qa.verdicts", 1, late, plan_id="p7"), late)
    out = agg.tick(late + 200_000)
    assert [a.dim("plan_id") for a in out] == ["p7"]


def test_metric_cap_counts_dropped_points() -> None:
    agg = Aggregator([WindowSpec(60)], max_metrics=2)
    for name in ("a", "b", "c"):
        agg.add(_p(name, 1, T0), T0)
    assert agg.metrics_dropped == 1
    assert {a.metric for a in agg.tick(T0 + 100_000)} == {"a", "b"}


def _exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


finite = st.floats(1e-3, 1e7, allow_nan=False, allow_infinity=False)
signed = st.one_of(finite, finite.map(lambda v: -v))


@settings(max_examples=200, deadline=None)
@given(st.lists(signed, min_size=1, max_size=400), st.sampled_from([0.5, 0.95, 0.99]))
def test_quantiles_within_one_percent_relative_error(values: list[float], q: float) -> None:
    sketch = Sketch()
    for v in values:
        sketch.add(v)
    exact = _exact(values, q)
    assert abs(sketch.quantile(q) - exact) <= 0.01 * abs(exact) + 1e-12


@settings(max_examples=100, deadline=None)
@given(st.lists(finite, min_size=1, max_size=200), st.lists(finite, min_size=1, max_size=200))
def test_merged_windows_keep_the_accuracy_and_the_totals(a: list[float], b: list[float]) -> None:
    agg = Aggregator([WindowSpec(60)])
    for i, v in enumerate(a):
        agg.add(_p("m", v, T0 + i % 60_000), T0)
    for i, v in enumerate(b):
        agg.add(_p("m", v, T0 + 60_000 + i % 60_000), T0 + 60_000)
    first, second = agg.tick(T0 + 10**6)
    both = merge(first, second)
    assert (both.window_start, both.window_size, both.count) == (T0, 120_000, len(a) + len(b))
    assert both.min == min(a + b) and both.max == max(a + b)
    assert math.isclose(both.sum, sum(a + b), rel_tol=1e-9)
    for q, got in ((0.5, both.p50), (0.95, both.p95), (0.99, both.p99)):
        exact = _exact(a + b, q)
        assert abs(got - exact) <= 0.01 * exact + 1e-12


def test_merge_refuses_different_series() -> None:
    agg = Aggregator([WindowSpec(60)])
    agg.add(_p("a", 1, T0), T0)
    agg.add(_p("b", 1, T0), T0)
    a, b = agg.tick(T0 + 10**6)
    with pytest.raises(ValueError, match="different series"):
        merge(a, b)


@given(st.lists(signed, max_size=100))
def test_sketch_json_round_trip_is_exact(values: list[float]) -> None:
    sketch = Sketch()
    for v in values:
        sketch.add(v)
    again = Sketch.from_json(sketch.to_json())
    assert again.to_json() == sketch.to_json()
    assert again.count == len(values)
    for q in (0.0, 0.5, 0.99, 1.0):
        a, b = again.quantile(q), sketch.quantile(q)
        assert a == b or (math.isnan(a) and math.isnan(b))


def test_aggregate_record_round_trip_and_key() -> None:
    agg = Aggregator([WindowSpec(60)])
    agg.add(_p("qa.verdicts", 1, T0, passed="false", chain="python", path="x"), T0)
    (a,) = agg.tick(T0 + 10**6)
    assert a.key == f"qa.verdicts|chain=python,passed=false|60000|{T0}"
    record = json.loads(json.dumps(a.to_record()))
    assert Aggregate.from_record(record) == a
