"""Rollout spec: plan options and operator rules, validated with errors that name the field."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.rollout.spec import (
    DEFAULT_STEPS,
    BadDirection,
    RolloutSpec,
    parse_condition,
    parse_spec,
    spec_from_dict,
)
from devline.errors import PlanError

RULES = {"metrics": {
    "error_rate": {"success": "result <= 0.01", "failure": "result > 0.05",
                   "failure_limit": 1, "inconclusive_limit": 2, "min_samples": 100},
    "latency_p95": {"success": "result < 0.3"},
}}


def test_defaults() -> None:
    spec = parse_spec({})
    assert spec.steps == DEFAULT_STEPS == (10, 25, 50, 75, 100)
    assert spec.bake_s == (300,) * 5
    assert (spec.interval_s, spec.deadline_s) == (60, 900)
    assert spec.metrics == () and spec.judge is None


def test_options_and_rules() -> None:
    spec = parse_spec({"rollout.steps": "20, 50,100", "rollout.bake_s": "120,240,600",
                       "rollout.interval_s": "30", "rollout.deadline_s": "600"}, RULES)
    assert spec.steps == (20, 50, 100) and spec.bake_s == (120, 240, 600)
    assert [r.name for r in spec.metrics] == ["error_rate", "latency_p95"]
    err = spec.rule("error_rate")
    assert (err.failure_limit, err.inconclusive_limit, err.consecutive_error_limit,
            err.min_samples) == (1, 2, 4, 100)
    assert spec.rule("latency_p95").failure is None


def test_metric_subset_from_the_plan() -> None:
    spec = parse_spec({"rollout.metrics": "latency_p95"}, RULES)
    assert [r.name for r in spec.metrics] == ["latency_p95"]
    with pytest.raises(PlanError) as info:
        parse_spec({"rollout.metrics": "cpu"}, RULES)
    assert info.value.field == "rollout.metrics"


@pytest.mark.parametrize(("steps", "why"), [
    ("10,25,50,75", "last step must be 100"),
    ("10,50,25,100", "strictly increasing"),
    ("10,10,100", "strictly increasing"),
    ("0,50,100", "(0, 100]"),
    ("50,150", "(0, 100]"),
    ("-5,100", "(0, 100]"),
    ("ten,100", "integers"),
    ("", "integers"),
])
def test_bad_steps(steps: str, why: str) -> None:
    with pytest.raises(PlanError, match=why.replace("(", r"\(").replace("]", r"\]")) as info:
        parse_spec({"rollout.steps": steps})
    assert info.value.field == "rollout.steps"


@pytest.mark.parametrize(("options", "field"), [
    ({"rollout.bake_s": "1,2"}, "rollout.bake_s"),
    ({"rollout.bake_s": "-1"}, "rollout.bake_s"),
    ({"rollout.interval_s": "0"}, "rollout.interval_s"),
    ({"rollout.interval_s": "1.5"}, "rollout.interval_s"),
    ({"rollout.deadline_s": "0"}, "rollout.deadline_s"),
    ({"rollout.stpes": "10,100"}, "rollout.stpes"),
])
def test_bad_options(options: dict[str, str], field: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_spec(options)
    assert info.value.field == field


def test_bake_must_allow_a_measurement_when_metrics_are_analysed() -> None:
    with pytest.raises(PlanError) as info:
        parse_spec({"rollout.bake_s": "60", "rollout.interval_s": "60"}, RULES)
    assert info.value.field == "rollout.bake_s"
    parse_spec({"rollout.bake_s": "0", "rollout.interval_s": "60"})  # no metrics: fine


@pytest.mark.parametrize(("rule", "field"), [
    ({}, "rollout.metrics.m"),
    ({"success": "result >= "}, "rollout.metrics.m.success"),
    ({"failure": "__import__('os')"}, "rollout.metrics.m.failure"),
    ({"success": "result > 1", "failure_limit": -1}, "rollout.metrics.m.failure_limit"),
    ({"success": "result > 1", "failure_limit": 1.5}, "rollout.metrics.m.failure_limit"),
    ({"success": "result > 1", "min_samples": 0}, "rollout.metrics.m.min_samples"),
    ({"success": "result > 1", "inconclusive_limit": "x"},
     "rollout.metrics.m.inconclusive_limit"),
    ("result > 1", "rollout.metrics.m"),
])
def test_bad_rules(rule: object, field: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_spec({}, {"metrics": {"m": rule}})
    assert info.value.field == field


@pytest.mark.parametrize(("text", "value", "holds"), [
    ("result <= 0.01", 0.01, True),
    ("result <= 0.01", 0.0101, False),
    ("result < 0.05", 0.05, False),
    ("result >= 0.95", 0.95, True),
    ("result > 1e-3", 0.002, True),
    ("result == 0", 0.0, True),
    ("result != 0", 0.0, False),
    ("0.5 > result", 0.4, True),  # number first: mirrored
    ("0.5 > result", 0.6, False),
    ("result > 0.1 and result < 0.2", 0.15, True),
    ("result > 0.1 and result < 0.2", 0.25, False),
    ("result < 0.1 or result > 0.9", 0.95, True),
    ("result < 0.1 or result > 0.9", 0.5, False),
    # `and` binds tighter than `or`
    ("result < 0 or result > 1 and result < 2", 1.5, True),
    ("result < 0 or result > 1 and result < 2", 2.5, False),
    ("  result>=-2  ", -2.0, True),
])
def test_conditions(text: str, value: float, holds: bool) -> None:
    assert parse_condition(text).holds(value) is holds


@pytest.mark.parametrize("text", [
    "", "   ", "result", "result <", "< 1", "result <> 1", "result = 1", "x > 1",
    "result > 1 and", "result > 1 result < 2", "result > nan", "result > inf",
    "result > 1e999", "len(result) > 1", "result > 0x10", "result and result", "1 < 2",
    "result > 1; import os", "result >= 0.9" + " and result >= 0.9" * 20,
])
def test_bad_conditions(text: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_condition(text, "f")
    assert info.value.field == "f"


@given(st.text(max_size=40))
def test_condition_parser_never_crashes(text: str) -> None:
    with contextlib.suppress(PlanError):
        parse_condition(text)


def test_judge_config() -> None:
    spec = parse_spec({}, {"judge": {"pass_score": 90, "marginal_score": 70, "metrics": {
        "latency": {"bad": "increase", "tolerance": 0.1, "critical": True},
        "throughput": {"bad": "decrease", "weight": 2}}}})
    assert spec.judge is not None
    assert spec.judge.pass_score == 90 and spec.judge.marginal_score == 70
    lat, thr = spec.judge.metrics
    assert lat.bad is BadDirection.INCREASE and lat.critical and lat.tolerance == 0.1
    assert thr.bad is BadDirection.DECREASE and thr.weight == 2


@pytest.mark.parametrize(("judge", "field"), [
    ({"metrics": []}, "rollout.judge.metrics"),
    ({"pass_score": 70, "marginal_score": 80, "metrics": [{"name": "a"}]},
     "rollout.judge.pass_score"),
    ({"alpha": 1.5, "metrics": [{"name": "a"}]}, "rollout.judge.alpha"),
    ({"metrics": [{"name": "a", "bad": "sideways"}]}, "rollout.judge.metrics.a.bad"),
    ({"metrics": [{"name": "a", "weight": 0}]}, "rollout.judge.metrics.a"),
    ({"metrics": [{"name": "a"}, {"name": "a"}]}, "rollout.judge.metrics"),
])
def test_bad_judge(judge: dict[str, object], field: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_spec({}, {"judge": judge})
    assert info.value.field == field


def test_round_trip_through_a_dict() -> None:
    spec = parse_spec({"rollout.steps": "5,100", "rollout.bake_s": "90,120"},
                      {**RULES, "judge": {"metrics": [{"name": "latency", "critical": True}]}})
    again = spec_from_dict(spec.to_dict())
    assert again == spec
    assert isinstance(again, RolloutSpec)
