"""What a canary rollout does: its steps, bake times, deadlines and analysis rules.

A plan carries flat string options (`rollout.steps`, `rollout.bake_s`, ...); the operator
configures the metric rules and the comparative judge once, in a mapping. `parse_spec`
checks both when the plan is accepted and raises `PlanError(field=...)` naming the
offending option, so a bad rollout is refused before any traffic moves.

Conditions are small comparison expressions over the measured value, in the spirit of
Argo Rollouts' `successCondition: result >= 0.95`. They are parsed here by a tiny grammar
(never `eval`)::

    condition  := conjunct ("or" conjunct)*
    conjunct   := comparison ("and" comparison)*
    comparison := "result" OP NUMBER | NUMBER OP "result"
    OP         := "<" | "<=" | ">" | ">=" | "==" | "!="
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise
from typing import Any

from devline.errors import PlanError

DEFAULT_STEPS: tuple[int, ...] = (10, 25, 50, 75, 100)
DEFAULT_BAKE_S = 300
DEFAULT_INTERVAL_S = 60
DEFAULT_DEADLINE_S = 900
# Argo Rollouts' default consecutiveErrorLimit.
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}
# Mirror of each operator when the number is written first: `0.5 > result` is `result < 0.5`.
_MIRROR = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_TOKEN = re.compile(r"\s*(?:(<=|>=|==|!=|<|>)|(result\b)|(and\b|or\b)|"
                    r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))")
MAX_CONDITION_CHARS = 200
OPTIONS = frozenset({"rollout.steps", "rollout.bake_s", "rollout.interval_s",
                     "rollout.deadline_s", "rollout.metrics"})


@dataclass(frozen=True)
class Comparison:
    """`result OP threshold`."""

    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        """Return whether `value` satisfies the comparison."""
        return _OPS[self.op](value, self.threshold)


@dataclass(frozen=True)
class Condition:
    """A parsed condition in disjunctive normal form: any conjunct whose comparisons all hold."""

    text: str
    any_of: tuple[tuple[Comparison, ...], ...]

    def holds(self, value: float) -> bool:
        """Return whether the measured `value` satisfies the condition."""
        return any(all(c.holds(value) for c in conj) for conj in self.any_of)


def parse_condition(text: str, field_name: str = "condition") -> Condition:
    """Parse a condition such as `"result <= 0.01"`; raise PlanError when it is not one."""
    if not isinstance(text, str) or not text.strip():
        raise PlanError("a condition must be a non-empty string", field=field_name)
    if len(text) > MAX_CONDITION_CHARS:
        raise PlanError(f"condition longer than {MAX_CONDITION_CHARS} characters",
                        field=field_name)
    tokens: list[tuple[str, str]] = []
    pos, src = 0, text.rstrip()
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if m is None or m.end() == pos:
            raise PlanError(f"cannot parse condition {text!r} at {src[pos:].strip()!r}",
                            field=field_name)
        op, var, word, num = m.groups()
        kind = "op" if op else "var" if var else "word" if word else "num"
        tokens.append((kind, op or var or word or num))
        pos = m.end()
    conjuncts: list[tuple[Comparison, ...]] = []
    current: list[Comparison] = []
    i = 0
    while True:
        if i + 3 > len(tokens):
            raise PlanError(f"incomplete comparison in {text!r}", field=field_name)
        current.append(_comparison(tokens[i:i + 3], text, field_name))
        i += 3
        if i == len(tokens):
            break
        kind, word = tokens[i]
        if kind != "word":
            raise PlanError(f"expected 'and' or 'or' in {text!r}", field=field_name)
        if word == "or":
            conjuncts.append(tuple(current))
            current = []
        i += 1
    conjuncts.append(tuple(current))
    return Condition(text.strip(), tuple(conjuncts))


def _comparison(tokens: list[tuple[str, str]], text: str, field_name: str) -> Comparison:
    kinds = [k for k, _ in tokens]
    if kinds == ["var", "op", "num"]:
        op, num = tokens[1][1], tokens[2][1]
    elif kinds == ["num", "op", "var"]:
        op, num = _MIRROR[tokens[1][1]], tokens[0][1]
    else:
        raise PlanError(f"expected 'result OP number' in {text!r}", field=field_name)
    value = float(num)
    if not math.isfinite(value):
        raise PlanError(f"threshold must be finite in {text!r}", field=field_name)
    return Comparison(op, value)


class BadDirection(StrEnum):
    """Which way a canary metric may not move compared with stable."""

    INCREASE = "increase"  # e.g. error rate, latency
    DECREASE = "decrease"  # e.g. throughput, success rate
    EITHER = "either"


@dataclass(frozen=True)
class MetricRule:
    """How one metric's measurements are judged during a bake (Argo Rollouts' Metric).

    A measurement is failed when `failure` holds, successful when `success` holds,
    otherwise inconclusive. With only `success`, a false success is a failure; with only
    `failure`, a false failure is a success (Argo's rules). At least one is required.
    """

    name: str
    success: Condition | None = None
    failure: Condition | None = None
    failure_limit: int = 0
    inconclusive_limit: int = 0
    consecutive_error_limit: int = DEFAULT_CONSECUTIVE_ERROR_LIMIT
    min_samples: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (conditions as their text)."""
        return {
            "name": self.name,
            "success": self.success.text if self.success else None,
            "failure": self.failure.text if self.failure else None,
            "failure_limit": self.failure_limit,
            "inconclusive_limit": self.inconclusive_limit,
            "consecutive_error_limit": self.consecutive_error_limit,
            "min_samples": self.min_samples,
        }


@dataclass(frozen=True)
class JudgeMetric:
    """One metric the comparative judge compares canary against stable."""

    name: str
    bad: BadDirection = BadDirection.INCREASE
    # Relative change of the canary median against stable's tolerated even when significant.
    tolerance: float = 0.0
    weight: float = 1.0
    critical: bool = False
    min_samples: int = 10

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return {"name": self.name, "bad": self.bad.value, "tolerance": self.tolerance,
                "weight": self.weight, "critical": self.critical,
                "min_samples": self.min_samples}


@dataclass(frozen=True)
class JudgeSpec:
    """Kayenta-style comparative judgement: score thresholds and the metrics to compare."""

    metrics: tuple[JudgeMetric, ...]
    pass_score: float = 95.0
    marginal_score: float = 75.0
    alpha: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return {"metrics": [m.to_dict() for m in self.metrics], "pass_score": self.pass_score,
                "marginal_score": self.marginal_score, "alpha": self.alpha}


@dataclass(frozen=True)
class RolloutSpec:
    """A validated rollout: weights per step (last 100), bake per step, timings, rules."""

    steps: tuple[int, ...] = DEFAULT_STEPS
    bake_s: tuple[int, ...] = (DEFAULT_BAKE_S,) * len(DEFAULT_STEPS)
    interval_s: int = DEFAULT_INTERVAL_S
    deadline_s: int = DEFAULT_DEADLINE_S
    metrics: tuple[MetricRule, ...] = ()
    judge: JudgeSpec | None = None

    def rule(self, name: str) -> MetricRule:
        """Return the rule of metric `name`."""
        for rule in self.metrics:
            if rule.name == name:
                return rule
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict that `spec_from_dict` reads back."""
        return {
            "steps": list(self.steps), "bake_s": list(self.bake_s),
            "interval_s": self.interval_s, "deadline_s": self.deadline_s,
            "metrics": [m.to_dict() for m in self.metrics],
            "judge": self.judge.to_dict() if self.judge else None,
        }


def spec_from_dict(data: Mapping[str, Any]) -> RolloutSpec:
    """Rebuild a spec from `RolloutSpec.to_dict` output (validating it again)."""
    options = {
        "rollout.steps": ",".join(str(s) for s in data["steps"]),
        "rollout.bake_s": ",".join(str(b) for b in data["bake_s"]),
        "rollout.interval_s": str(data["interval_s"]),
        "rollout.deadline_s": str(data["deadline_s"]),
    }
    config = {"metrics": {m["name"]: m for m in data.get("metrics", [])},
              "judge": data.get("judge")}
    return parse_spec(options, config)


def parse_spec(options: Mapping[str, str], config: Mapping[str, Any] | None = None
               ) -> RolloutSpec:
    """Build a RolloutSpec from plan options and the operator's rollout config.

    `options` are the plan's flat `rollout.*` strings. `config` may hold `metrics`
    (name -> rule fields) and `judge` (judge fields). `rollout.metrics` in the options
    picks a comma-separated subset of the configured metrics (default: all of them).
    """
    config = config or {}
    unknown = sorted(k for k in options if k.startswith("rollout.") and k not in OPTIONS)
    if unknown:
        # A typo such as `rollout.stpes` must not silently fall back to the defaults.
        raise PlanError(f"unknown rollout option {unknown[0]!r}; known: {sorted(OPTIONS)}",
                        field=unknown[0])
    steps = _int_list(options.get("rollout.steps"), "rollout.steps", DEFAULT_STEPS)
    if not steps:
        raise PlanError("at least one step is required", field="rollout.steps")
    if any(not 0 < s <= 100 for s in steps):
        raise PlanError(f"every step must be in (0, 100], got {list(steps)}",
                        field="rollout.steps")
    if any(b <= a for a, b in pairwise(steps)):
        raise PlanError(f"steps must be strictly increasing, got {list(steps)}",
                        field="rollout.steps")
    if steps[-1] != 100:
        raise PlanError(f"the last step must be 100, got {steps[-1]}", field="rollout.steps")
    bake = _int_list(options.get("rollout.bake_s"), "rollout.bake_s", (DEFAULT_BAKE_S,))
    if len(bake) == 1:
        bake = bake * len(steps)
    if len(bake) != len(steps):
        raise PlanError(f"rollout.bake_s needs 1 or {len(steps)} values, got {len(bake)}",
                        field="rollout.bake_s")
    if any(b < 0 for b in bake):
        raise PlanError("bake times must be >= 0", field="rollout.bake_s")
    interval = _int(options.get("rollout.interval_s"), "rollout.interval_s", DEFAULT_INTERVAL_S)
    deadline = _int(options.get("rollout.deadline_s"), "rollout.deadline_s", DEFAULT_DEADLINE_S)
    if interval <= 0:
        raise PlanError("rollout.interval_s must be > 0", field="rollout.interval_s")
    if deadline <= 0:
        raise PlanError("rollout.deadline_s must be > 0", field="rollout.deadline_s")
    rules = _rules(config.get("metrics") or {}, options.get("rollout.metrics"))
    judge = _judge(config["judge"]) if config.get("judge") else None
    if rules and any(b <= interval for b in bake):
        # Otherwise a step could end without a single measurement: always inconclusive.
        raise PlanError(f"with metrics to analyse, every bake must be longer than "
                        f"rollout.interval_s ({interval}s), got {list(bake)}",
                        field="rollout.bake_s")
    return RolloutSpec(steps, bake, interval, deadline, rules, judge)


def _rules(configured: Mapping[str, Any], chosen: str | None) -> tuple[MetricRule, ...]:
    names = list(configured)
    if chosen is not None and chosen.strip():
        names = [n.strip() for n in chosen.split(",") if n.strip()]
        unknown = [n for n in names if n not in configured]
        if unknown:
            raise PlanError(f"unknown rollout metrics {unknown}; configured: "
                            f"{sorted(configured)}", field="rollout.metrics")
        if len(set(names)) != len(names):
            raise PlanError("rollout.metrics names a metric twice", field="rollout.metrics")
    return tuple(_rule(n, configured[n]) for n in names)


def _rule(name: str, raw: Any) -> MetricRule:
    where = f"rollout.metrics.{name}"
    if not isinstance(raw, Mapping):
        raise PlanError("a metric rule must be a mapping", field=where)
    success = raw.get("success")
    failure = raw.get("failure")
    if success is None and failure is None:
        # Argo treats a metric without conditions as always successful; that would let
        # a rollout pass on no evidence, so we refuse it.
        raise PlanError("a metric needs a success or a failure condition", field=where)
    rule = MetricRule(
        name=name,
        success=parse_condition(success, f"{where}.success") if success is not None else None,
        failure=parse_condition(failure, f"{where}.failure") if failure is not None else None,
        failure_limit=_nonneg(raw.get("failure_limit", 0), f"{where}.failure_limit"),
        inconclusive_limit=_nonneg(raw.get("inconclusive_limit", 0),
                                   f"{where}.inconclusive_limit"),
        consecutive_error_limit=_nonneg(
            raw.get("consecutive_error_limit", DEFAULT_CONSECUTIVE_ERROR_LIMIT),
            f"{where}.consecutive_error_limit"),
        min_samples=_nonneg(raw.get("min_samples", 1), f"{where}.min_samples"),
    )
    if rule.min_samples < 1:
        raise PlanError("min_samples must be >= 1", field=f"{where}.min_samples")
    return rule


def _judge(raw: Any) -> JudgeSpec:
    if not isinstance(raw, Mapping):
        raise PlanError("the judge must be a mapping", field="rollout.judge")
    pass_score = _float(raw.get("pass_score", 95.0), "rollout.judge.pass_score")
    marginal = _float(raw.get("marginal_score", 75.0), "rollout.judge.marginal_score")
    alpha = _float(raw.get("alpha", 0.05), "rollout.judge.alpha")
    if not 0 <= marginal <= pass_score <= 100:
        raise PlanError("need 0 <= marginal_score <= pass_score <= 100",
                        field="rollout.judge.pass_score")
    if not 0 < alpha < 1:
        raise PlanError("alpha must be in (0, 1)", field="rollout.judge.alpha")
    items = raw.get("metrics")
    if isinstance(items, Mapping):
        items = [{"name": k, **v} for k, v in items.items()]
    if not isinstance(items, list) or not items:
        raise PlanError("the judge needs at least one metric", field="rollout.judge.metrics")
    metrics: list[JudgeMetric] = []
    for item in items:
        where = f"rollout.judge.metrics.{item.get('name', '?')}"
        try:
            bad = BadDirection(item.get("bad", "increase"))
        except ValueError as exc:
            raise PlanError(f"bad must be one of {[d.value for d in BadDirection]}",
                            field=f"{where}.bad") from exc
        metric = JudgeMetric(
            name=str(item["name"]), bad=bad,
            tolerance=_float(item.get("tolerance", 0.0), f"{where}.tolerance"),
            weight=_float(item.get("weight", 1.0), f"{where}.weight"),
            critical=bool(item.get("critical", False)),
            min_samples=_nonneg(item.get("min_samples", 10), f"{where}.min_samples"),
        )
        if metric.tolerance < 0 or metric.weight <= 0 or metric.min_samples < 1:
            raise PlanError("tolerance >= 0, weight > 0 and min_samples >= 1 are required",
                            field=where)
        metrics.append(metric)
    if len({m.name for m in metrics}) != len(metrics):
        raise PlanError("the judge names a metric twice", field="rollout.judge.metrics")
    return JudgeSpec(tuple(metrics), pass_score, marginal, alpha)


def _int_list(raw: str | None, field_name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    if raw is None:
        return default
    try:
        return tuple(int(part.strip()) for part in str(raw).split(","))
    except ValueError as exc:
        raise PlanError(f"expected comma-separated integers, got {raw!r}",
                        field=field_name) from exc


def _int(raw: str | None, field_name: str, default: int) -> int:
    if raw is None:
        return default
    try:
        return int(str(raw).strip())
    except ValueError as exc:
        raise PlanError(f"expected an integer, got {raw!r}", field=field_name) from exc


def _nonneg(raw: Any, field_name: str) -> int:
    if isinstance(raw, bool):
        raise PlanError(f"expected an integer, got {raw!r}", field=field_name)
    try:
        value = int(raw)
    except (TypeError, ValueError) as exc:
        raise PlanError(f"expected an integer, got {raw!r}", field=field_name) from exc
    if value < 0 or (value != raw and not isinstance(raw, str)):
        raise PlanError(f"expected an integer >= 0, got {raw!r}", field=field_name)
    return value


def _float(raw: Any, field_name: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise PlanError(f"expected a number, got {raw!r}", field=field_name) from exc
    if not math.isfinite(value):
        raise PlanError(f"expected a finite number, got {raw!r}", field=field_name)
    return value
