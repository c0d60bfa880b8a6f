"""Comparative canary judgement: canary samples against stable samples, Kayenta-style.

Each metric is compared with a two-sided Mann-Whitney U test (standard library only). A
metric fails when the difference is significant (p < alpha), goes in the direction that is
bad for it, and the canary median moved by more than the metric's relative tolerance
against the stable median. The score is the weighted share of passing metrics, in percent:
at least `pass_score` passes, at least `marginal_score` is marginal (a person decides),
below fails. A failing critical metric fails the judgement whatever the score. A metric
with too few samples on either side is NODATA: it never passes and never fails. The score
counts it as not passing; the verdict fails only if the score would stay below marginal
had it passed; a critical NODATA metric caps the result at marginal. So missing data
leads to a person (marginal), never to a pass, nor to fix tasks against working code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, assert_never

from agents.rollout.spec import BadDirection, JudgeMetric, JudgeSpec

# Exact p-values are computed (no ties, as scipy's `method="auto"` does) up to this size
# of the smaller sample; beyond it the normal approximation is used.
EXACT_MAX = 8


@dataclass(frozen=True)
class MannWhitney:
    """The result of a two-sided Mann-Whitney U test."""

    u1: float  # U of the first sample: pairs (x, y) with x > y, ties counting one half
    u2: float
    p_value: float
    z: float | None  # None when the p-value is exact
    method: Literal["exact", "asymptotic"]


def rank(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Return the mid-ranks (1-based) of `values` and the sizes of their tie groups."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        mid = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[order[k]] = mid
        if j > i:
            ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def _exact_cdf(u: int, n1: int, n2: int) -> float:
    """Return P(U <= u) under the null, counting arrangements (no ties)."""
    # ways[m][n][u]: arrangements of m x's and n y's with statistic u, built row by row.
    # f(m, n, u) = f(m - 1, n, u - n) + f(m, n - 1, u)  (the largest value is an x or a y)
    prev = [[1] + [0] * (n1 * n2) for _ in range(n2 + 1)]  # m = 0: only u = 0
    for m in range(1, n1 + 1):
        cur = [[0] * (n1 * n2 + 1) for _ in range(n2 + 1)]
        cur[0][0] = 1
        for n in range(1, n2 + 1):
            for k in range(m * n + 1):
                cur[n][k] = (prev[n][k - n] if k >= n else 0) + cur[n - 1][k]
        prev = cur
    counts = prev[n2]
    total = math.comb(n1 + n2, n1)
    return sum(counts[: u + 1]) / total


def mann_whitney_u(x: Sequence[float], y: Sequence[float], *,
                   method: Literal["auto", "exact", "asymptotic"] = "auto",
                   continuity: bool = True) -> MannWhitney:
    """Run a two-sided Mann-Whitney U test of `x` against `y`.

    The asymptotic p-value uses the normal approximation with the tie correction of the
    variance and, by default, a continuity correction of 0.5 (scipy's defaults). `exact`
    counts arrangements and needs samples without ties.
    """
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples must be non-empty")
    ranks, ties = rank([*x, *y])
    r1 = sum(ranks[:n1])
    u1 = r1 - n1 * (n1 + 1) / 2
    u2 = n1 * n2 - u1
    if method == "auto":
        method = "exact" if not ties and min(n1, n2) <= EXACT_MAX else "asymptotic"
    if method == "exact":
        if ties:
            raise ValueError("the exact test needs samples without ties")
        p = min(1.0, 2 * _exact_cdf(int(min(u1, u2)), n1, n2))
        return MannWhitney(u1, u2, p, None, "exact")
    n = n1 + n2
    tie_term = sum(t ** 3 - t for t in ties) / (n * (n - 1)) if n > 1 else 0.0
    variance = n1 * n2 / 12 * ((n + 1) - tie_term)
    mu = n1 * n2 / 2
    if variance <= 0:  # every value equal: no evidence of any difference
        return MannWhitney(u1, u2, 1.0, 0.0, "asymptotic")
    diff = abs(u1 - mu) - (0.5 if continuity else 0.0)
    z = max(diff, 0.0) / math.sqrt(variance)
    p = min(1.0, math.erfc(z / math.sqrt(2)))
    return MannWhitney(u1, u2, p, z, "asymptotic")


class MetricVerdict(StrEnum):
    """How one compared metric came out."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    NODATA = "nodata"


class Verdict(StrEnum):
    """The overall judgement."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    MARGINAL = "marginal"
    FAIL = "fail"


@dataclass(frozen=True)
class MetricJudgement:
    """One metric's comparison: verdict, test result and the medians behind it."""

    name: str
    verdict: MetricVerdict
    reason: str
    canary_median: float | None = None
    stable_median: float | None = None
    relative_change: float | None = None
    test: MannWhitney | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return {"name": self.name, "verdict": self.verdict.value, "reason": self.reason,
                "canary_median": self.canary_median, "stable_median": self.stable_median,
                "relative_change": _finite(self.relative_change),
                "p_value": self.test.p_value if self.test else None,
                "u": self.test.u1 if self.test else None}


@dataclass(frozen=True)
class Judgement:
    """The judgement of a canary: verdict, score in percent, and every metric's part."""

    verdict: Verdict
    score: float
    reason: str
    metrics: tuple[MetricJudgement, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return {"verdict": self.verdict.value, "score": self.score, "reason": self.reason,
                "metrics": [m.to_dict() for m in self.metrics]}


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else (1e308 if x > 0 else -1e308)


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def compare_metric(metric: JudgeMetric, canary: Sequence[float], stable: Sequence[float],
                   alpha: float) -> MetricJudgement:
    """Compare one metric's canary samples with its stable samples."""
    canary = [float(v) for v in canary if math.isfinite(v)]
    stable = [float(v) for v in stable if math.isfinite(v)]
    if len(canary) < metric.min_samples or len(stable) < metric.min_samples:
        return MetricJudgement(metric.name, MetricVerdict.NODATA,
                               f"{len(canary)} canary / {len(stable)} stable samples, "
                               f"need {metric.min_samples} each")
    test = mann_whitney_u(canary, stable)
    mc, ms = _median(canary), _median(stable)
    change = ((mc - ms) / abs(ms) if ms != 0
              else 0.0 if mc == 0 else math.copysign(math.inf, mc))
    # The medians can tie while the distributions differ: then U says which way it moved.
    up = change > 0 or (change == 0 and test.u1 > test.u2)
    down = change < 0 or (change == 0 and test.u1 < test.u2)
    match metric.bad:
        case BadDirection.INCREASE:
            wrong_way = up
        case BadDirection.DECREASE:
            wrong_way = down
        case BadDirection.EITHER:
            wrong_way = up or down
        case _:
            assert_never(metric.bad)
    bad_move = wrong_way and (metric.tolerance == 0 or abs(change) > metric.tolerance)
    if test.p_value < alpha and bad_move:
        return MetricJudgement(metric.name, MetricVerdict.FAIL,
                               f"significant (p={test.p_value:.4g} < {alpha}) "
                               f"{metric.bad.value} bad: median {ms:g} -> {mc:g}",
                               mc, ms, change, test)
    reason = (f"p={test.p_value:.4g}" if test.p_value >= alpha
              else f"change {change:+.3g} within tolerance/direction")
    return MetricJudgement(metric.name, MetricVerdict.PASS, reason, mc, ms, change, test)


def judge(spec: JudgeSpec, samples: Mapping[str, Mapping[str, Sequence[float]]]) -> Judgement:
    """Judge the canary from `samples[metric] = {"canary": [...], "stable": [...]}`."""
    parts = tuple(
        compare_metric(m, samples.get(m.name, {}).get("canary", ()),
                       samples.get(m.name, {}).get("stable", ()), spec.alpha)
        for m in spec.metrics)
    weights = {m.name: m.weight for m in spec.metrics}
    total = sum(weights.values())
    passed = sum(weights[p.name] for p in parts if p.verdict is MetricVerdict.PASS)
    score = round(100.0 * passed / total, 6) if total else 0.0
    nodata = sum(weights[p.name] for p in parts if p.verdict is MetricVerdict.NODATA)
    # As if every metric without data had passed: only real failures can fail a canary.
    hopeful = round(100.0 * (passed + nodata) / total, 6) if total else 0.0
    critical = {m.name for m in spec.metrics if m.critical}
    failed_critical = [p.name for p in parts if p.name in critical
                       and p.verdict is MetricVerdict.FAIL]
    missing = [p.name for p in parts if p.verdict is MetricVerdict.NODATA]
    if failed_critical:
        return Judgement(Verdict.FAIL, score, f"critical metric failed: {failed_critical}",
                         parts)
    if hopeful < spec.marginal_score:
        return Judgement(Verdict.FAIL, score, f"score {score:g} < {spec.marginal_score:g}"
                         + (f" even if {missing} had passed" if missing else ""), parts)
    if score >= spec.pass_score and not (critical & set(missing)):
        return Judgement(Verdict.PASS, score, f"score {score:g} >= {spec.pass_score:g}", parts)
    why = f"score {score:g} below pass {spec.pass_score:g}"
    if missing:
        why += f"; no data for {missing}"
    return Judgement(Verdict.MARGINAL, score, why, parts)
