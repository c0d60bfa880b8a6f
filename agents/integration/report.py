"""The verdict on one shard of integration tests (pure): which failures are real, which
are flaky, which are the shard's own error (cut by the time limit, a file the plan does not
have, a run pytest reported nothing of), and the fields of the `IntegrationResult`."""

from __future__ import annotations

import shlex
from collections.abc import Collection, Mapping
from typing import Any

from agents.integration.attribution import attribute
from agents.integration.junit import MAX_OUTPUT_BYTES, TestOutcome, clip, recorded_durations
from agents.integration.runner import ShardRun
from agents.integration.verdict import classify, needs_rerun

OUTPUT_BUDGET = 1024 * 1024  # failure output per result, shared when many tests fail
MESSAGE_MAX = 2000          # bytes of a failure's one-line message
ERROR_LOG_TAIL = 4000       # characters of pytest's output kept in a shard's error
# How run_shard (agents.integration.runner) marks a test that pytest never reported.
_TIMED_OUT = "timeout:"
_NO_FILE = "test file not found:"
_NOT_REPORTED = "not reported by pytest"




def unreported(outcome: TestOutcome) -> bool:
    """True for an outcome run_shard made up for a test pytest did not report."""
    return (outcome.status == "error" and not outcome.traceback
            and outcome.message.startswith((_TIMED_OUT, _NO_FILE, _NOT_REPORTED)))


def excused(outcome: TestOutcome, run: ShardRun) -> bool:
    """True when a test's failure is the shard's error, not the test's: it was cut by the
    time limit, its file is not in the plan, or pytest reported none of the shard."""
    if not unreported(outcome):
        return False
    return (outcome.message.startswith((_TIMED_OUT, _NO_FILE))
            or all(unreported(o) for o in run.outcomes))


def to_rerun(run: ShardRun) -> list[TestOutcome]:
    """The failed tests to re-run alone (a test pytest left unreported while it reported
    others is re-run too: another test may have crashed the process)."""
    return [o for o in run.outcomes if needs_rerun(o) and not excused(o, run)]


def shard_error(run: ShardRun) -> str | None:
    """Why (part of) the shard did not run, with the tail of pytest's output; or None."""
    missing = [o for o in run.outcomes if excused(o, run)]
    timed_out = [o for o in missing if o.message.startswith(_TIMED_OUT)]
    no_file = [o for o in missing if o.message.startswith(_NO_FILE)]
    parts = []
    if timed_out:
        parts.append(f"{len(timed_out)} of {len(run.outcomes)} test(s) did not finish "
                     f"({timed_out[0].message})")
    if no_file:
        names = sorted({o.message.split(":", 1)[1].strip() for o in no_file})
        parts.append(f"{len(no_file)} test(s) name files the plan does not have: "
                     + ", ".join(names)[:500])
    if len(missing) > len(timed_out) + len(no_file):
        parts.append(f"pytest reported none of the {len(run.outcomes)} test(s) "
                     f"(exit code {run.exit_code})")
    if not parts:
        return None
    log_text = next((o.output for o in timed_out or missing if o.output), "")
    tail = log_text[-ERROR_LOG_TAIL:]
    return "; ".join(parts) + (f"\n{tail}" if tail else "")


def failure_record(outcome: TestOutcome, plan_files: Collection[str],
                   limit: int = MAX_OUTPUT_BYTES) -> dict[str, Any]:
    """A real failure as the result carries it: message, output and the files to fix."""
    text = "\n".join(p for p in (outcome.traceback, outcome.output) if p)
    return {"test_id": outcome.test_id,
            "message": clip(outcome.message or outcome.status, min(MESSAGE_MAX, max(200, limit))),
            "output": clip(text, limit), "files": attribute(outcome, plan_files)}


def verdict(run: ShardRun, reruns: Mapping[str, TestOutcome | None],
            plan_files: Collection[str]) -> dict[str, Any]:
    """The result's fields that the tests decide, from the first run and the reruns."""
    error = shard_error(run)
    flaky: list[str] = []
    failed: list[tuple[TestOutcome, TestOutcome | None]] = []
    for first in run.outcomes:
        if not needs_rerun(first) or excused(first, run):
            continue  # passed, skipped, or part of the shard's error
        rerun = reruns.get(first.test_id)
        if classify(first, rerun) == "flaky":
            flaky.append(first.test_id)
        else:
            failed.append((first, rerun))
    # Thousands of failures (a module every test imports is broken) share the budget, so
    # the result stays one record.
    limit = min(MAX_OUTPUT_BYTES, OUTPUT_BUDGET // max(len(failed), 1))
    failures = []
    for first, rerun in failed:
        # The isolated run's evidence when it has any (not a made-up outcome).
        shown = rerun if rerun is not None and needs_rerun(rerun) and not unreported(
            rerun) else first
        failures.append({**failure_record(shown, plan_files, limit), "test_id": first.test_id})
    reported = [o for o in run.outcomes if not unreported(o)]
    return {
        "passed": not failures and error is None,
        "failed_tests": [f["test_id"] for f in failures],
        "implicated_files": sorted({p for f in failures for p in f["files"]}),
        "flaky_tests": flaky, "failures": failures,
        "durations": recorded_durations(reported), "tests": len(reported),
        "command": shlex.join(run.command), "error": error,
    }


def summary(record: Mapping[str, Any]) -> str:
    """One log line for a reported shard."""
    text = (f"shard {record['shard'] + 1}/{record['shards']} of plan {record['plan_id']} run "
            f"{record['run_id']}: {record['tests']} tests, {len(record['failures'])} failed, "
            f"{len(record['flaky_tests'])} flaky in {record['duration_ms'] / 1000:.1f}s")
    if record["error"]:
        text += f"; error: {record['error'].splitlines()[0]}"
    return text
