"""Measurement assessment and analysis runs, against Argo Rollouts' documented semantics."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.rollout.analysis import (
    AnalysisRun,
    Measurement,
    Outcome,
    RunStatus,
    assess,
    worse,
)
from agents.rollout.spec import MetricRule, parse_condition

S, F, INC, E = Outcome.SUCCESSFUL, Outcome.FAILED, Outcome.INCONCLUSIVE, Outcome.ERROR


def rule(success: str | None = "result <= 0.01", failure: str | None = "result > 0.05",
         **limits: int) -> MetricRule:
    return MetricRule("err", parse_condition(success) if success else None,
                      parse_condition(failure) if failure else None, **limits)


def m(value: float | None, samples: int = 100, error: str | None = None) -> Measurement:
    return Measurement(value, samples, error)


@pytest.mark.parametrize(("value", "expected"), [
    (0.0, S), (0.01, S), (0.03, INC), (0.05, INC), (0.06, F), (1.0, F),
])
def test_both_conditions(value: float, expected: Outcome) -> None:
    assert assess(rule(), m(value)) is expected


def test_only_success_condition_false_is_failure() -> None:
    r = rule(failure=None)
    assert assess(r, m(0.0)) is S and assess(r, m(0.02)) is F


def test_only_failure_condition_false_is_success() -> None:
    r = rule(success=None)
    assert assess(r, m(0.02)) is S and assess(r, m(0.06)) is F


def test_failure_wins_when_both_hold() -> None:
    r = rule(success="result >= 0", failure="result > 0.5")
    assert assess(r, m(0.7)) is F


@pytest.mark.parametrize("measurement", [
    m(None), m(None, samples=0), m(0.0, samples=0), m(0.0, samples=99),
    m(math.nan), m(math.inf), m(-math.inf),
])
def test_no_data_is_inconclusive_never_success(measurement: Measurement) -> None:
    for r in (rule(min_samples=100), rule(failure=None, min_samples=100),
              rule(success=None, min_samples=100)):
        assert assess(r, measurement) is INC


@given(st.one_of(st.none(), st.floats(allow_nan=True)), st.integers(0, 9))
def test_too_few_samples_never_succeed(value: float | None, samples: int) -> None:
    # With min_samples 10, whatever the value, success is impossible.
    for r in (rule(min_samples=10), rule(success=None, min_samples=10)):
        assert assess(r, Measurement(value, samples)) is not S


def test_error_is_error_whatever_the_value() -> None:
    assert assess(rule(), m(0.0, error="timeout")) is E


def run_of(r: MetricRule, *outcomes: Measurement) -> AnalysisRun:
    run = AnalysisRun([r])
    for i, x in enumerate(outcomes):
        run.record("err", x, i)
    return run


GOOD, BAD, MEH, ERR = m(0.0), m(0.9), m(0.03), m(None, error="boom")


def test_failure_limit_is_strictly_exceeded() -> None:
    # Argo: Failed when failed > failureLimit; the default limit 0 fails on the first.
    assert run_of(rule(), BAD).verdict().status is RunStatus.FAILED
    assert run_of(rule(failure_limit=2), BAD, BAD).verdict().status is RunStatus.RUNNING
    v = run_of(rule(failure_limit=2), BAD, GOOD, BAD, BAD).verdict()
    assert v.status is RunStatus.FAILED and v.metric == "err"
    assert "failed (3) > failure_limit (2)" in v.message


def test_inconclusive_limit_pauses() -> None:
    assert run_of(rule(), MEH).verdict().status is RunStatus.INCONCLUSIVE
    assert run_of(rule(inconclusive_limit=1), MEH).verdict().status is RunStatus.RUNNING
    assert run_of(rule(inconclusive_limit=1), MEH, GOOD, MEH).verdict().status \
        is RunStatus.INCONCLUSIVE


def test_consecutive_errors_default_limit_is_four() -> None:
    assert run_of(rule(), ERR, ERR, ERR, ERR).verdict().status is RunStatus.RUNNING
    assert run_of(rule(), ERR, ERR, ERR, ERR, ERR).verdict().status is RunStatus.ERROR


def test_a_working_measurement_ends_an_error_run() -> None:
    run = run_of(rule(), ERR, ERR, ERR, ERR, GOOD, ERR, ERR, ERR, ERR)
    assert run.results["err"].consecutive_errors == 4 and run.results["err"].error == 8
    assert run.verdict().status is RunStatus.RUNNING
    # an inconclusive reading does not end the run of errors
    run = run_of(rule(inconclusive_limit=5), ERR, ERR, MEH, ERR, ERR, ERR)
    assert run.verdict().status is RunStatus.ERROR


def test_worst_status_wins_across_and_within_metrics() -> None:
    assert worse(RunStatus.INCONCLUSIVE, RunStatus.FAILED) is RunStatus.FAILED
    assert worse(RunStatus.FAILED, RunStatus.ERROR) is RunStatus.FAILED
    assert worse(RunStatus.SUCCESSFUL, RunStatus.RUNNING) is RunStatus.RUNNING
    # inconclusive beyond its limit and a failure: the failure decides
    assert run_of(rule(), MEH, BAD).verdict().status is RunStatus.FAILED
    lat = MetricRule("lat", parse_condition("result < 0.3"), inconclusive_limit=0)
    run = AnalysisRun([rule(), lat])
    run.record("lat", m(None), 0)
    run.record("err", BAD, 1)
    verdict = run.verdict()
    assert verdict.status is RunStatus.FAILED and verdict.metric == "err"


def test_final_verdict_needs_a_success_per_metric() -> None:
    assert run_of(rule(), GOOD).verdict(final=True).status is RunStatus.SUCCESSFUL
    # no measurement at all: inconclusive, not successful
    v = AnalysisRun([rule()]).verdict(final=True)
    assert v.status is RunStatus.INCONCLUSIVE and "no successful measurement" in v.message
    # only tolerated inconclusive readings: still no evidence
    assert run_of(rule(inconclusive_limit=3), MEH, MEH).verdict(final=True).status \
        is RunStatus.INCONCLUSIVE
    # a tolerated failure next to successes passes (Argo's failureLimit)
    assert run_of(rule(failure_limit=1), BAD, GOOD).verdict(final=True).status \
        is RunStatus.SUCCESSFUL
    # no metrics at all: nothing to analyse, the bake alone decides
    assert AnalysisRun([]).verdict(final=True).status is RunStatus.SUCCESSFUL


def test_round_trip_and_bounded_evidence() -> None:
    run = run_of(rule(inconclusive_limit=100), *([MEH] * 30), GOOD)
    again = AnalysisRun.from_dict([rule(inconclusive_limit=100)], run.to_dict())
    assert again.to_dict() == run.to_dict()
    assert len(run.results["err"].last) == 10
    assert run.results["err"].last[-1]["outcome"] == "successful"
    assert run.evidence()["err"]["rule"]["success"] == "result <= 0.01"


@given(st.lists(st.sampled_from([GOOD, BAD, MEH, ERR]), max_size=30),
       st.integers(0, 3), st.integers(0, 3), st.integers(0, 3))
def test_verdict_matches_counts(seq: list[Measurement], fl: int, il: int, cl: int) -> None:
    r = rule(failure_limit=fl, inconclusive_limit=il, consecutive_error_limit=cl)
    run = run_of(r, *seq)
    res = run.results["err"]
    status = run.verdict().status
    if res.failed > fl:
        assert status is RunStatus.FAILED
    elif res.consecutive_errors > cl:
        assert status is RunStatus.ERROR
    elif res.inconclusive > il:
        assert status is RunStatus.INCONCLUSIVE
    else:
        assert status is RunStatus.RUNNING
        final = run.verdict(final=True).status
        assert final is (RunStatus.SUCCESSFUL if res.successful else RunStatus.INCONCLUSIVE)
