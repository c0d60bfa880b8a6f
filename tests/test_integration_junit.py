"""parse_junit on reports written by a real pytest run over a small generated suite."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.integration import JunitError, TestOutcome, parse_junit, recorded_durations
from agents.integration.junit import clip, node_id

SUITE = {
    "calc/__init__.py": "",
    "calc/ops.py": """
        def add(a, b):
            assert a >= 0, "negative"
            return a + b
    """,
    "tests/test_ops.py": """
        import pytest
        from calc.ops import add

        def test_pass():
            assert add(1, 2) == 3

        def test_fail():
            print("about to fail")
            assert add(-1, 2) == 1

        @pytest.fixture
        def broken():
            raise RuntimeError("fixture boom")

        def test_error(broken):
            pass

        def test_skip():
            pytest.skip("not today")

        class TestGroup:
            @pytest.mark.parametrize("x", [1.5, "a::b"])
            def test_param(self, x):
                assert x
    """,
    "tests/test_broken.py": """
        import no_such_module

        def test_never():
            pass
    """,
}


def write_suite(root: Path, files: dict[str, str]) -> None:
    for relpath, source in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))


def run_pytest(root: Path, *options: str) -> bytes:
    report = root / "report.xml"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            f"--rootdir={root}", "--continue-on-collection-errors",
            f"--junitxml={report}", *options, "tests"]
    subprocess.run(argv, cwd=root, capture_output=True, timeout=120,
                   env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, check=False)
    return report.read_bytes()


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("suite")
    write_suite(root, SUITE)
    return root


def by_id(outcomes: list[TestOutcome]) -> dict[str, TestOutcome]:
    return {o.test_id: o for o in outcomes}


EXPECTED_STATUS = {
    "tests/test_broken.py": "error",
    "tests/test_ops.py::test_pass": "passed",
    "tests/test_ops.py::test_fail": "failed",
    "tests/test_ops.py::test_error": "error",
    "tests/test_ops.py::test_skip": "skipped",
    "tests/test_ops.py::TestGroup::test_param[1.5]": "passed",
    "tests/test_ops.py::TestGroup::test_param[a::b]": "passed",
}


@pytest.mark.parametrize("family", ["xunit1", "xunit2"])
def test_node_ids_and_statuses_from_each_junit_family(suite: Path, family: str) -> None:
    outcomes = parse_junit(run_pytest(suite, "-o", f"junit_family={family}"), suite)
    assert {o.test_id: o.status for o in outcomes} == EXPECTED_STATUS


def test_xunit2_without_a_root_guesses_classes_from_capitals(suite: Path) -> None:
    outcomes = parse_junit(run_pytest(suite, "-o", "junit_family=xunit2"))
    assert {o.test_id for o in outcomes} == set(EXPECTED_STATUS)


def test_failure_message_traceback_output_and_duration(suite: Path) -> None:
    xml = run_pytest(suite, "-o", "junit_family=xunit1", "-o", "junit_logging=all")
    outcomes = by_id(parse_junit(xml.decode(), suite))
    failed = outcomes["tests/test_ops.py::test_fail"]
    assert failed.message == "AssertionError: negative"
    assert "calc/ops.py:3: AssertionError" in failed.traceback
    assert "about to fail" in failed.output
    assert "Captured Log" not in failed.output  # empty sections are dropped
    assert failed.duration_s >= 0
    assert "fixture boom" in outcomes["tests/test_ops.py::test_error"].message
    assert outcomes["tests/test_ops.py::test_skip"].message == "not today"
    broken = outcomes["tests/test_broken.py"]
    assert broken.message == "collection failure"
    assert "No module named 'no_such_module'" in broken.traceback


def test_a_failure_then_a_teardown_error_is_a_failure() -> None:
    xml = """<testsuites><testsuite><testcase classname="tests.test_a" name="test_x"
        file="tests/test_a.py" time="0.5"><failure message="boom">tb</failure>
        <error message="failed on teardown">tb2</error></testcase></testsuite></testsuites>"""
    [outcome] = parse_junit(xml)
    assert (outcome.test_id, outcome.status, outcome.message) == (
        "tests/test_a.py::test_x", "failed", "boom")
    assert outcome.duration_s == 0.5


def test_a_bare_testsuite_and_odd_times_are_read() -> None:
    xml = """<testsuite><testcase classname="t.test_b.TestC" name="test_y" time="nan"/>
        <testcase classname="t.test_b" name="test_z" time="-1"/></testsuite>"""
    outcomes = parse_junit(xml)
    assert [(o.test_id, o.duration_s) for o in outcomes] == [
        ("t/test_b.py::TestC::test_y", 0.0), ("t/test_b.py::test_z", 0.0)]


def test_malformed_and_dtd_reports_are_refused() -> None:
    with pytest.raises(JunitError):
        parse_junit(b"<testsuite><testcase")
    with pytest.raises(JunitError, match="DTD"):
        parse_junit('<!DOCTYPE x [<!ENTITY a "aaaa">]><testsuite>&a;</testsuite>')


def test_node_id_prefers_the_file_attribute_even_with_dots_in_directories() -> None:
    assert node_id("pkg.v1.test_m.TestA", "test_b", "pkg.v1/test_m.py") == (
        "pkg.v1/test_m.py::TestA::test_b")  # file "pkg.v1/test_m.py" dotted is a prefix
    assert node_id("", "tests.test_m", "tests/test_m.py") == "tests/test_m.py"
    assert node_id("", "tests.test_m") == "tests/test_m.py"


def test_output_is_cut_to_eight_kilobytes_keeping_head_and_tail() -> None:
    text = "HEAD" + "x" * 20_000 + "TAIL"
    cut = clip(text)
    assert len(cut.encode()) <= 8 * 1024
    assert cut.startswith("HEAD") and cut.endswith("TAIL") and "bytes cut" in cut


@given(st.text(), st.integers(min_value=64, max_value=4096))
def test_clip_never_exceeds_its_limit(text: str, limit: int) -> None:
    cut = clip(text, limit)
    assert len(cut.encode()) <= limit
    if len(text.encode()) <= limit:
        assert cut == text


def test_recorded_durations_sum_parametrized_cases_under_their_base_id() -> None:
    outcomes = [TestOutcome("t.py::test_p[1]", "passed", 0.5, "", "", ""),
                TestOutcome("t.py::test_p[a[b]]", "passed", 0.25, "", "", ""),
                TestOutcome("t.py::TestC::test_q", "failed", 2.0, "", "", "")]
    assert recorded_durations(outcomes) == {"t.py::test_p": 0.75, "t.py::TestC::test_q": 2.0}
