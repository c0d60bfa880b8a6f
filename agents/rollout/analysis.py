"""Judge measurements against metric rules, one measurement and one analysis run at a time.

The semantics follow Argo Rollouts' analysis (docs/features/analysis.md and
`analysis/analysis.go`, `assessMetricFailureInconclusiveOrError`):

* a measurement is failed when the failure condition holds, successful when the success
  condition holds, inconclusive when both are given and neither holds; with only a success
  condition a false one is a failure, with only a failure condition a false one a success
  (`EvaluateResult`);
* a metric is Failed when `failed > failure_limit`, Inconclusive when
  `inconclusive > inconclusive_limit`, Error when `consecutive_errors >
  consecutive_error_limit` (default 4); a successful or failed measurement ends a run of
  errors;
* the run takes the worst metric status in the order Successful < Running < Inconclusive
  < Error < Failed (`analysisStatusOrder`); an Inconclusive run pauses the rollout for a
  person, and a Failed or Error run aborts it ("If the analysis run fails or errors out,
  the Rollout enters an aborted state").

Two deliberate departures, both towards caution:

* no data (no value, a non-finite value, or fewer samples than `min_samples`) is
  inconclusive, never success, whatever the conditions say;
* within one metric the worst exceeded limit wins (Argo lets a later check overwrite an
  earlier one), and a run that ends (`final=True`) with a metric that never had a
  successful measurement is Inconclusive rather than Successful.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from agents.rollout.spec import MetricRule

# Recent measurements kept per metric as evidence; older ones are only counted.
KEEP_LAST = 10


class Outcome(StrEnum):
    """The assessment of one measurement."""

    SUCCESSFUL = "successful"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"


class RunStatus(StrEnum):
    """The status of a metric or of a whole analysis run."""

    RUNNING = "running"
    SUCCESSFUL = "successful"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"
    FAILED = "failed"


# Best to worst, as Argo's analysisStatusOrder (Pending folded into Running).
_SEVERITY = {RunStatus.SUCCESSFUL: 0, RunStatus.RUNNING: 1, RunStatus.INCONCLUSIVE: 2,
             RunStatus.ERROR: 3, RunStatus.FAILED: 4}


def worse(a: RunStatus, b: RunStatus) -> RunStatus:
    """Return the worse of two statuses."""
    return b if _SEVERITY[b] > _SEVERITY[a] else a


@dataclass(frozen=True)
class Measurement:
    """One reading of a metric: its value, how many samples it rests on, or the error."""

    value: float | None
    samples: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return {"value": self.value, "samples": self.samples, "error": self.error}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        """Build from `to_dict` output (or an event's `measurement` field)."""
        value = data.get("value")
        error = data.get("error")
        return cls(None if value is None else float(value), int(data.get("samples") or 0),
                   None if error is None else str(error))


def assess(rule: MetricRule, m: Measurement) -> Outcome:
    """Return the outcome of one measurement under `rule`."""
    if m.error is not None:
        return Outcome.ERROR
    if m.value is None or not math.isfinite(m.value) or m.samples < rule.min_samples:
        return Outcome.INCONCLUSIVE
    failed = rule.failure is not None and rule.failure.holds(m.value)
    succeeded = rule.success is not None and rule.success.holds(m.value)
    if rule.success is not None and rule.failure is None:
        failed = not succeeded
    elif rule.failure is not None and rule.success is None:
        succeeded = not failed
    if failed:
        return Outcome.FAILED
    return Outcome.SUCCESSFUL if succeeded else Outcome.INCONCLUSIVE


@dataclass
class MetricResult:
    """Counts of one metric's outcomes in a run, and its last few measurements."""

    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_errors: int = 0
    last: list[dict[str, Any]] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Return how many measurements were taken."""
        return self.successful + self.failed + self.inconclusive + self.error

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return {"successful": self.successful, "failed": self.failed,
                "inconclusive": self.inconclusive, "error": self.error,
                "consecutive_errors": self.consecutive_errors, "last": list(self.last)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricResult:
        """Build from `to_dict` output."""
        return cls(int(data["successful"]), int(data["failed"]), int(data["inconclusive"]),
                   int(data["error"]), int(data["consecutive_errors"]),
                   [dict(x) for x in data.get("last", [])])


@dataclass(frozen=True)
class RunVerdict:
    """Where a run stands, the metric that decided it and why."""

    status: RunStatus
    metric: str | None = None
    message: str = ""


def metric_status(rule: MetricRule, r: MetricResult) -> tuple[RunStatus, str]:
    """Return the metric's status from its counts and Argo's limits, with the reason."""
    status, message = RunStatus.RUNNING, ""
    if r.inconclusive > rule.inconclusive_limit:
        status = RunStatus.INCONCLUSIVE
        message = f"inconclusive ({r.inconclusive}) > inconclusive_limit " \
                  f"({rule.inconclusive_limit})"
    if r.consecutive_errors > rule.consecutive_error_limit:
        status = RunStatus.ERROR
        message = f"consecutive errors ({r.consecutive_errors}) > consecutive_error_limit " \
                  f"({rule.consecutive_error_limit})"
    if r.failed > rule.failure_limit:
        status = RunStatus.FAILED
        message = f"failed ({r.failed}) > failure_limit ({rule.failure_limit})"
    return status, message


class AnalysisRun:
    """The measurements of one bake, folded per metric. Goes to and from plain dicts."""

    def __init__(self, rules: Iterable[MetricRule],
                 results: Mapping[str, MetricResult] | None = None) -> None:
        self.rules = {r.name: r for r in rules}
        self.results = {name: MetricResult() for name in self.rules}
        for name, result in (results or {}).items():
            if name in self.rules:
                self.results[name] = result

    def record(self, metric: str, m: Measurement, at_ms: int) -> Outcome:
        """Fold one measurement of `metric` in and return its outcome."""
        rule = self.rules[metric]
        outcome = assess(rule, m)
        r = self.results[metric]
        match outcome:
            case Outcome.SUCCESSFUL:
                r.successful += 1
                r.consecutive_errors = 0
            case Outcome.FAILED:
                r.failed += 1
                r.consecutive_errors = 0
            case Outcome.INCONCLUSIVE:
                # Argo resets the error run only on Successful/Failed; an inconclusive
                # reading is not a working measurement either.
                r.inconclusive += 1
            case Outcome.ERROR:
                r.error += 1
                r.consecutive_errors += 1
        r.last = [*r.last, {**m.to_dict(), "outcome": outcome.value, "at": at_ms}][-KEEP_LAST:]
        return outcome

    def verdict(self, *, final: bool = False) -> RunVerdict:
        """Return the run's status: the worst metric status, or RUNNING until `final`.

        When `final` (the bake is over), a metric with no successful measurement makes the
        run Inconclusive: absence of evidence never passes a step.
        """
        worst = RunVerdict(RunStatus.SUCCESSFUL if final else RunStatus.RUNNING)
        for name, rule in self.rules.items():
            status, message = metric_status(rule, self.results[name])
            if status is RunStatus.RUNNING and final and self.results[name].successful == 0:
                status = RunStatus.INCONCLUSIVE
                message = f"no successful measurement in {self.results[name].count} taken"
            if status is not RunStatus.RUNNING and worse(worst.status, status) is not worst.status:
                worst = RunVerdict(status, name, f"metric {name!r}: {message}")
        return worst

    def evidence(self) -> dict[str, Any]:
        """Return the counts and recent measurements of every metric, for people."""
        return {name: {**r.to_dict(), "rule": self.rules[name].to_dict()}
                for name, r in self.results.items()}

    def to_dict(self) -> dict[str, Any]:
        """Return the results as a JSON-able dict (the rules live in the spec)."""
        return {name: r.to_dict() for name, r in self.results.items()}

    @classmethod
    def from_dict(cls, rules: Iterable[MetricRule], data: Mapping[str, Any]) -> AnalysisRun:
        """Rebuild from `to_dict` output and the spec's rules."""
        return cls(rules, {k: MetricResult.from_dict(v) for k, v in data.items()})
