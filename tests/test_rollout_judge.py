"""Mann-Whitney U against hand-computed values, and the Kayenta-style judgement."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.rollout.judge import (
    MetricVerdict,
    Verdict,
    compare_metric,
    judge,
    mann_whitney_u,
    rank,
)
from agents.rollout.spec import BadDirection, JudgeMetric, JudgeSpec


def test_ranks_with_ties() -> None:
    ranks, ties = rank([3.0, 1.0, 2.0, 2.0, 2.0])
    assert ranks == [5.0, 1.0, 3.0, 3.0, 3.0] and ties == [3]


def test_complete_separation_3_vs_3() -> None:
    # U1 = R1 - n1(n1+1)/2 = 6 - 6 = 0; U2 = 9. Exact: one arrangement of C(6,3) = 20
    # has U <= 0, two-sided p = 2/20.
    exact = mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert (exact.u1, exact.u2, exact.method) == (0, 9, "exact")
    assert exact.p_value == pytest.approx(0.1)
    # Normal approximation: mu = 4.5, sigma^2 = 3*3*7/12 = 5.25, z = (4.5 - 0.5)/sqrt(5.25)
    asym = mann_whitney_u([1, 2, 3], [4, 5, 6], method="asymptotic")
    z = 4 / math.sqrt(5.25)
    assert asym.z == pytest.approx(z) == pytest.approx(1.7457431)
    assert asym.p_value == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert asym.p_value == pytest.approx(0.0808556, abs=1e-7)  # scipy's published value
    no_cc = mann_whitney_u([1, 2, 3], [4, 5, 6], method="asymptotic", continuity=False)
    assert no_cc.z == pytest.approx(4.5 / math.sqrt(5.25))


@pytest.mark.parametrize(("x", "y", "u", "p"), [
    # n1 = n2 = 4: C(8,4) = 70 arrangements; counts of U = 0, 1, 2 are 1, 1, 2.
    ([1, 2, 3, 4], [5, 6, 7, 8], 0, 2 / 70),
    ([1, 2, 3, 5], [4, 6, 7, 8], 1, 2 * 2 / 70),
    ([1, 2, 4, 5], [3, 6, 7, 8], 2, 2 * 4 / 70),
    ([5, 6, 7, 8], [1, 2, 3, 4], 16, 2 / 70),  # the other tail
])
def test_exact_small_samples(x: list[float], y: list[float], u: float, p: float) -> None:
    result = mann_whitney_u(x, y)
    assert result.method == "exact" and result.u1 == u
    assert result.p_value == pytest.approx(p)


def test_exact_centre_and_symmetry() -> None:
    result = mann_whitney_u([1, 3, 5, 7], [2, 4, 6, 8])
    assert result.u1 == 6 and result.u2 == 10
    # P(U <= 6) for n1 = n2 = 4 is 24/70 (counts 1,1,2,3,5,5,7 for U = 0..6: partitions
    # of U into at most 4 parts of at most 4)
    assert result.p_value == pytest.approx(2 * 24 / 70)
    # the centre of the distribution: p capped at 1
    assert mann_whitney_u([1, 4, 5, 8], [2, 3, 6, 7]).p_value == 1.0


def test_ties_use_the_corrected_variance() -> None:
    # Ranks of 1,2,2,2,3 | 4,5,6 with x = {1,2,2,3}: 1, 3, 3, 5 -> R1 = 12, U1 = 2, U2 = 14.
    # One tie group of 3: sum(t^3 - t) = 24; sigma^2 = 16/12 * (9 - 24/56).
    result = mann_whitney_u([1, 2, 2, 3], [2, 4, 5, 6])
    assert result.method == "asymptotic" and (result.u1, result.u2) == (2, 14)
    sigma = math.sqrt(16 / 12 * (9 - 24 / 56))
    assert result.z == pytest.approx((8 - 2 - 0.5) / sigma) == pytest.approx(1.6269219)
    assert result.p_value == pytest.approx(math.erfc(result.z / math.sqrt(2)))
    with pytest.raises(ValueError, match="ties"):
        mann_whitney_u([1, 2, 2, 3], [2, 4, 5, 6], method="exact")


def test_all_equal_and_empty() -> None:
    assert mann_whitney_u([1.0] * 5, [1.0] * 7).p_value == 1.0
    with pytest.raises(ValueError):
        mann_whitney_u([], [1.0])


def test_exact_agrees_with_the_normal_approximation_for_larger_samples() -> None:
    x = [float(v) for v in range(0, 16, 2)]
    y = [float(v) + 5.5 for v in range(1, 16, 2)]
    exact = mann_whitney_u(x, y, method="exact")
    asym = mann_whitney_u(x, y, method="asymptotic")
    assert exact.u1 == asym.u1
    assert exact.p_value == pytest.approx(asym.p_value, abs=0.01)


samples = st.lists(st.integers(-1000, 1000).map(float), min_size=1, max_size=30)


@given(samples)
def test_identical_samples_show_no_difference(xs: list[float]) -> None:
    result = mann_whitney_u(xs, list(xs))
    assert result.p_value == pytest.approx(1.0)


@given(samples, samples)
def test_symmetry(xs: list[float], ys: list[float]) -> None:
    a, b = mann_whitney_u(xs, ys), mann_whitney_u(ys, xs)
    assert a.u1 + a.u2 == len(xs) * len(ys)
    assert (a.u1, a.u2) == (b.u2, b.u1)
    assert a.p_value == pytest.approx(b.p_value)
    assert 0.0 <= a.p_value <= 1.0


@given(st.lists(st.floats(0, 100), min_size=6, max_size=40),
       st.lists(st.floats(0, 100), min_size=6, max_size=40), st.floats(101, 1e6))
def test_shifted_samples_are_detected(xs: list[float], ys: list[float], shift: float) -> None:
    result = mann_whitney_u(xs, [y + shift for y in ys])
    assert result.u1 == 0
    assert result.p_value < 0.01


def metric(bad: BadDirection = BadDirection.INCREASE, **kw: object) -> JudgeMetric:
    return JudgeMetric(str(kw.pop("name", "latency")), bad, **kw)  # type: ignore[arg-type]


STABLE = [100.0 + i for i in range(20)]
SLOWER = [150.0 + i for i in range(20)]
TIGHT = [100.0 + i * 0.1 for i in range(20)]
SLIGHTLY_SLOWER = [105.0 + i * 0.1 for i in range(20)]  # +5 %, fully separated


def test_metric_fails_only_in_its_bad_direction() -> None:
    up = compare_metric(metric(BadDirection.INCREASE), SLOWER, STABLE, 0.05)
    assert up.verdict is MetricVerdict.FAIL and up.test is not None and up.test.p_value < 1e-6
    assert compare_metric(metric(BadDirection.DECREASE), SLOWER, STABLE, 0.05).verdict \
        is MetricVerdict.PASS
    assert compare_metric(metric(BadDirection.EITHER), SLOWER, STABLE, 0.05).verdict \
        is MetricVerdict.FAIL
    assert compare_metric(metric(BadDirection.DECREASE), STABLE, SLOWER, 0.05).verdict \
        is MetricVerdict.FAIL


def test_tolerance_absorbs_small_significant_changes() -> None:
    strict = compare_metric(metric(), SLIGHTLY_SLOWER, TIGHT, 0.05)
    lenient = compare_metric(metric(tolerance=0.1), SLIGHTLY_SLOWER, TIGHT, 0.05)
    assert strict.test is not None and strict.test.p_value < 0.05
    assert strict.verdict is MetricVerdict.FAIL
    assert lenient.verdict is MetricVerdict.PASS


def test_not_significant_passes_and_too_few_samples_is_nodata() -> None:
    assert compare_metric(metric(), STABLE[::-1], STABLE, 0.05).verdict is MetricVerdict.PASS
    nodata = compare_metric(metric(), SLOWER[:3], STABLE, 0.05)
    assert nodata.verdict is MetricVerdict.NODATA
    assert compare_metric(metric(), [math.nan] * 20, STABLE, 0.05).verdict \
        is MetricVerdict.NODATA


def spec(*metrics: JudgeMetric) -> JudgeSpec:
    return JudgeSpec(tuple(metrics), pass_score=95, marginal_score=75)


def test_score_and_thresholds() -> None:
    ms = (metric(name="a"), metric(name="b"), metric(name="c"), metric(name="d", weight=2.0))
    ok = {m.name: {"canary": STABLE, "stable": STABLE} for m in ms}
    passing = judge(spec(*ms), ok)
    assert passing.verdict is Verdict.PASS and passing.score == 100
    one_bad = {**ok, "a": {"canary": SLOWER, "stable": STABLE}}
    marginal = judge(spec(*ms), one_bad)
    assert marginal.score == 80 and marginal.verdict is Verdict.MARGINAL
    heavy_bad = {**ok, "d": {"canary": SLOWER, "stable": STABLE}}
    failing = judge(spec(*ms), heavy_bad)
    assert failing.score == 60 and failing.verdict is Verdict.FAIL


def test_a_failing_critical_metric_fails_everything() -> None:
    ms = [metric(name=f"m{i}") for i in range(9)] + [metric(name="crit", critical=True)]
    data = {m.name: {"canary": STABLE, "stable": STABLE} for m in ms}
    data["crit"] = {"canary": SLOWER, "stable": STABLE}
    result = judge(spec(*ms), data)
    assert result.score == 90 and result.verdict is Verdict.FAIL
    assert "crit" in result.reason


def test_no_data_never_passes() -> None:
    ms = [metric(name=f"m{i}") for i in range(20)] + [metric(name="crit", critical=True)]
    data = {m.name: {"canary": STABLE, "stable": STABLE} for m in ms[:-1]}
    result = judge(spec(*ms), data)  # the critical metric has no samples
    assert result.score == pytest.approx(100 * 20 / 21)
    assert result.verdict is Verdict.MARGINAL
    nothing = judge(spec(metric()), {})
    assert nothing.verdict is Verdict.MARGINAL and nothing.score == 0
    assert nothing.to_dict()["metrics"][0]["verdict"] == "nodata"
    # missing data cannot save a canary whose real failures already sink it
    ms = [metric(name="a"), metric(name="b"), metric(name="c", weight=0.2)]
    data = {"a": {"canary": SLOWER, "stable": STABLE}, "b": {"canary": SLOWER, "stable": STABLE}}
    sunk = judge(spec(*ms), data)
    assert sunk.verdict is Verdict.FAIL and "even if ['c'] had passed" in sunk.reason
