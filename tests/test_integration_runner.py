"""run_shard end to end on generated suites (real pytest subprocesses, no broker)."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest

from agents.integration import (
    ShardRun,
    TestOutcome,
    attribute,
    classify,
    discover_tests,
    needs_rerun,
    plan_shards,
    run_shard,
)
from agents.integration.runner import settle, shard_env

PLAN = {
    "calc/__init__.py": "",
    "calc/ops.py": """
        def add(a, b):
            return a + b

        def div(a, b):
            assert b != 0, "division by zero"
            return a / b
    """,
    "calc/api.py": """
        from calc.ops import div

        def mean(values):
            return div(sum(values), len(values))
    """,
    "tests/test_ops.py": """
        import os
        from pathlib import Path

        import pytest

        from calc.api import mean
        from calc.ops import add, div

        def test_add():
            assert add(2, 2) == 4

        def test_div_by_zero():
            print("dividing")
            assert div(1, 0) == 0

        def test_mean_of_nothing():
            assert mean([]) == 0

        def test_wrong_expectation():
            assert add(1, 1) == 3

        def test_flaky():
            marker = Path(__file__).with_name("flaky.ran")
            if not marker.exists():
                marker.write_text("once")
                pytest.fail("first run fails")

        @pytest.mark.parametrize("n", [1, 2, 3])
        def test_param(n):
            assert add(n, 0) == n

        def test_env():
            assert "DEVLINE_TEST_SECRET" not in os.environ
            assert os.environ["PYTHONDONTWRITEBYTECODE"] == "1"
            assert os.environ["EXTRA_FLAG"] == "on"
    """,
    "tests/test_broken.py": """
        import calc.missing

        def test_unreachable():
            pass
    """,
    "tests/test_module_skip.py": """
        import pytest
        pytest.skip("not on this platform", allow_module_level=True)

        def test_skipped():
            pass
    """,
    "tests/test_slow.py": """
        import time

        def test_quick():
            pass

        def test_sleeps():
            time.sleep(60)

        def test_after_the_sleep():
            pass
    """,
}
PLAN_FILES = list(PLAN)


def write_suite(root: Path, files: dict[str, str]) -> None:
    for relpath, source in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    write_suite(tmp_path, PLAN)
    return tmp_path


def run(root: Path, tests: list[str], timeout_s: float = 120) -> ShardRun:
    return asyncio.run(run_shard(root, tests, timeout_s=timeout_s, env={"EXTRA_FLAG": "on"}))


def by_id(result: ShardRun) -> dict[str, TestOutcome]:
    return {o.test_id: o for o in result.outcomes}


def test_a_shard_runs_exactly_its_tests(plan: Path) -> None:
    wanted = ["tests/test_ops.py::test_add", "tests/test_ops.py::test_param"]
    result = run(plan, wanted)
    assert sorted(by_id(result)) == [
        "tests/test_ops.py::test_add", "tests/test_ops.py::test_param[1]",
        "tests/test_ops.py::test_param[2]", "tests/test_ops.py::test_param[3]"]
    assert {o.status for o in result.outcomes} == {"passed"}
    assert result.exit_code == 0
    assert result.command[:3] == (sys.executable, "-m", "pytest")
    assert result.duration_s > 0


def test_the_environment_is_minimal(plan: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVLINE_TEST_SECRET", "hunter2")
    result = run(plan, ["tests/test_ops.py::test_env"])
    assert [o.status for o in result.outcomes] == ["passed"], result.outcomes


def test_shard_env_keeps_only_the_basics() -> None:
    env = shard_env({"PATH": "/bin", "HOME": "/h", "AWS_SECRET_ACCESS_KEY": "x"},
                    Path("/plan"), Path("/plugin"), {"EXTRA": "1"})
    assert env == {"PATH": "/bin", "HOME": "/h", "PYTHONPATH": "/plan:/plugin",
                   "PYTHONDONTWRITEBYTECODE": "1", "EXTRA": "1"}


def test_failures_errors_and_skips_come_back_per_test(plan: Path) -> None:
    wanted = [t for t in discover_tests(plan, PLAN_FILES) if "test_slow" not in t]
    outcomes = by_id(run(plan, wanted))
    assert outcomes["tests/test_ops.py::test_div_by_zero"].status == "failed"
    assert "dividing" in outcomes["tests/test_ops.py::test_div_by_zero"].output
    # A module that fails to import costs its own tests only.
    broken = outcomes["tests/test_broken.py::test_unreachable"]
    assert (broken.status, broken.message) == ("error", "collection failure")
    assert "calc.missing" in broken.traceback
    assert outcomes["tests/test_module_skip.py::test_skipped"].status == "skipped"
    assert outcomes["tests/test_ops.py::test_add"].status == "passed"


def test_a_missing_test_file_is_an_error_not_an_aborted_shard(plan: Path) -> None:
    outcomes = by_id(run(plan, ["tests/test_gone.py::test_x", "tests/test_ops.py::test_add"]))
    assert outcomes["tests/test_gone.py::test_x"].status == "error"
    assert "not found" in outcomes["tests/test_gone.py::test_x"].message
    assert outcomes["tests/test_ops.py::test_add"].status == "passed"


def test_a_timeout_keeps_what_was_reported_and_errors_the_rest(plan: Path) -> None:
    tests = discover_tests(plan, ["tests/test_slow.py"])
    result = run(plan, tests, timeout_s=2)
    outcomes = by_id(result)
    assert outcomes["tests/test_slow.py::test_quick"].status == "passed"
    for test in ("tests/test_slow.py::test_sleeps", "tests/test_slow.py::test_after_the_sleep"):
        assert outcomes[test].status == "error"
        assert outcomes[test].message.startswith("timeout")
    assert result.duration_s < 15


def test_an_empty_shard_runs_nothing(plan: Path) -> None:
    assert run(plan, []) == ShardRun(outcomes=(), duration_s=0.0, exit_code=0, command=())


def test_a_test_that_fails_then_passes_in_isolation_is_flaky(plan: Path) -> None:
    flaky = "tests/test_ops.py::test_flaky"
    [first] = run(plan, [flaky]).outcomes
    assert needs_rerun(first)
    [again] = run(plan, [flaky]).outcomes
    assert classify(first, again) == "flaky"


def test_a_real_failure_is_attributed_to_the_module_that_raised(plan: Path) -> None:
    wrong = "tests/test_ops.py::test_div_by_zero"
    [first] = run(plan, [wrong]).outcomes
    [again] = run(plan, [wrong]).outcomes
    assert classify(first, again) == "failed"
    assert attribute(first, PLAN_FILES) == ["calc/ops.py"]


def test_attribution_lists_callers_after_the_raising_frame(plan: Path) -> None:
    [outcome] = run(plan, ["tests/test_ops.py::test_mean_of_nothing"]).outcomes
    assert attribute(outcome, PLAN_FILES) == ["calc/ops.py", "calc/api.py"]


def test_attribution_reads_native_tracebacks_with_absolute_paths(plan: Path) -> None:
    result = asyncio.run(run_shard(plan, ["tests/test_ops.py::test_div_by_zero"],
                                   env={"PYTEST_ADDOPTS": "--tb=native"}))
    [outcome] = result.outcomes
    assert f'File "{plan}/calc/ops.py"' in outcome.traceback
    assert attribute(outcome, PLAN_FILES) == ["calc/ops.py"]


def test_a_failing_assertion_in_the_test_falls_back_to_coverage_then_the_test(
        plan: Path) -> None:
    [outcome] = run(plan, ["tests/test_ops.py::test_wrong_expectation"]).outcomes
    assert attribute(outcome, PLAN_FILES) == ["tests/test_ops.py"]
    covered = [str(plan / "calc/ops.py"), "calc/__init__.py", "tests/test_ops.py", "/usr/x.py"]
    assert attribute(outcome, PLAN_FILES, covered=covered) == ["calc/__init__.py", "calc/ops.py"]


def test_shards_planned_from_recorded_durations_run_concurrently(plan: Path) -> None:
    tests = [t for t in discover_tests(plan, ["tests/test_ops.py"]) if "flaky" not in t]
    shards = plan_shards(tests, {}, 3)

    async def all_shards() -> list[ShardRun]:
        return await asyncio.gather(*(run_shard(plan, s.tests, env={"EXTRA_FLAG": "on"})
                                      for s in shards))

    runs = asyncio.run(all_shards())
    ran = sorted(o.test_id.split("[")[0] for r in runs for o in r.outcomes)
    assert sorted(set(ran)) == sorted(tests)


def test_settle_expands_a_module_report_and_names_unreported_tests() -> None:
    module = TestOutcome("tests/test_m.py", "error", 0.0, "collection failure", "", "tb")
    outcomes = settle(["tests/test_m.py::test_a", "tests/test_n.py::test_b"], [module],
                      exit_code=1, timeout_s=None, log="pytest said")
    assert [(o.test_id, o.status, o.message) for o in outcomes] == [
        ("tests/test_m.py::test_a", "error", "collection failure"),
        ("tests/test_n.py::test_b", "error", "not reported by pytest (exit code 1)")]
    assert outcomes[1].output == "pytest said"
