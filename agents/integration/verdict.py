"""The verdict on one test from its first run and its rerun in isolation (pure)."""

from __future__ import annotations

from agents.integration.junit import TestOutcome

FAILING = frozenset({"failed", "error"})


def needs_rerun(outcome: TestOutcome) -> bool:
    """True when a test failed (or errored) and must be re-run once in isolation."""
    return outcome.status in FAILING


def classify(first: TestOutcome, rerun: TestOutcome | None) -> str:
    """"passed", "skipped", "failed", or "flaky" (failed, then passed in isolation).

    A flaky test is reported but does not gate the plan. A rerun that is skipped proves
    nothing, so the test stays failed.
    """
    if first.status == "passed":
        return "passed"
    if first.status == "skipped":
        return "skipped"
    if first.status not in FAILING:
        raise ValueError(f"unknown test status {first.status!r} for {first.test_id}")
    if rerun is not None and rerun.status == "passed":
        return "flaky"
    return "failed"
