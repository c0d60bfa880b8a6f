"""attribute, classify and is_test_file as pure functions over recorded outcomes."""

from __future__ import annotations

import pytest

from agents.integration import TestOutcome, attribute, classify, is_test_file, traceback_paths


def failed(test_id: str, traceback: str, output: str = "") -> TestOutcome:
    return TestOutcome(test_id, "failed", 0.1, "boom", output, traceback)


def outcome(status: str) -> TestOutcome:
    return TestOutcome("tests/test_a.py::test_x", status, 0.1, "", "", "")


PYTEST_LONG = """\
def test_total():
>       assert report.total([1]) == 1

tests/test_report.py:4:
_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _
app/report.py:3: in total
    return helpers.fold(values)
tests/helpers.py:9: in fold
    return app.math.add(*values)
_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _

    def add(a, b):
>       raise ValueError("x.py:1: not a frame")
E       ValueError: y/z.py:2: not a frame either

app/math.py:2: ValueError
"""

PLAN = ["app/report.py", "app/math.py", "tests/test_report.py", "tests/helpers.py"]


def test_innermost_plan_frame_first_then_its_callers_skipping_test_code() -> None:
    result = attribute(failed("tests/test_report.py::test_total", PYTEST_LONG), PLAN)
    assert result == ["app/math.py", "app/report.py"]


def test_frames_are_read_in_order_and_message_lines_are_not_frames() -> None:
    paths = traceback_paths(failed("t", PYTEST_LONG))
    assert paths == ["tests/test_report.py", "app/report.py", "tests/helpers.py", "app/math.py"]


def test_native_frames_with_absolute_paths_match_plan_files_by_suffix() -> None:
    native = (
        "Traceback (most recent call last):\n"
        '  File "/srv/plan/tests/test_report.py", line 4, in test_total\n'
        "    assert report.total([1]) == 1\n"
        '  File "/srv/plan/app/report.py", line 3, in total\n'
        '  File "/usr/lib/python3.11/functools.py", line 9, in reduce\n'
        "E   ValueError\n"
    )
    plan = [*PLAN, "report.py"]  # the longest matching plan path wins
    assert attribute(failed("tests/test_report.py::test_total", native), plan) == [
        "app/report.py"]


def test_frames_outside_the_plan_fall_back_to_coverage_then_to_the_test_file() -> None:
    outside = failed("tests/test_report.py::test_total",
                     "/usr/lib/python3.11/json/decoder.py:337: JSONDecodeError")
    assert attribute(outside, PLAN) == ["tests/test_report.py"]
    assert attribute(outside, PLAN, covered=["./app/report.py", "tests/helpers.py"]) == [
        "app/report.py"]


def test_the_output_is_searched_when_there_is_no_traceback() -> None:
    collected = failed("tests/test_report.py::test_total", "", output="app/math.py:2: in <module>")
    assert attribute(collected, PLAN) == ["app/math.py"]


@pytest.mark.parametrize(("first", "rerun", "verdict"), [
    ("passed", None, "passed"),
    ("skipped", None, "skipped"),
    ("failed", None, "failed"),
    ("failed", "failed", "failed"),
    ("failed", "passed", "flaky"),
    ("error", "passed", "flaky"),
    ("error", "error", "failed"),
    ("failed", "skipped", "failed"),
])
def test_classify(first: str, rerun: str | None, verdict: str) -> None:
    assert classify(outcome(first), outcome(rerun) if rerun else None) == verdict


def test_classify_refuses_an_unknown_status() -> None:
    with pytest.raises(ValueError, match="unknown"):
        classify(outcome("xpassed"), None)


@pytest.mark.parametrize(("path", "expected"), [
    ("test_ops.py", True),
    ("calc/test_ops.py", True),
    ("calc/ops_test.py", True),
    ("tests/helpers.py", True),
    ("pkg/tests/data/util.py", True),
    ("src/__tests__/app.js", True),
    ("conftest.py", True),
    ("web/app.test.js", True),
    ("web/app.spec.ts", True),
    ("web/App.test.tsx", True),
    ("./tests/x.py", True),
    ("calc/ops.py", False),
    ("calc/testing.py", False),
    ("contest.py", False),
    ("web/app.js", False),
    ("latest/ops.py", False),
    ("tests", False),
])
def test_is_test_file(path: str, expected: bool) -> None:
    assert is_test_file(path) is expected
