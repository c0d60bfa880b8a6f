"""discover_tests (ast scan) agrees with what `pytest --collect-only` collects."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agents.integration import discover_tests
from devline.errors import WorkspaceError

FILES = {
    "pkg/__init__.py": "",
    "pkg/core.py": "def test_not_collected_outside_test_files():\n    pass\n",
    "tests/conftest.py": "def test_in_conftest_is_not_a_test():\n    pass\n",
    "tests/test_a.py": """
        import sys

        def test_one():
            pass

        async def test_async_is_collected():
            pass

        def helper():
            pass

        def testing_prefix_counts():
            pass

        if sys.platform:
            def test_under_if():
                pass

        class TestOuter:
            def test_m(self):
                pass

            def helper(self):
                pass

            class TestInner:
                def test_deep(self):
                    pass

        class TestWithInit:
            def __init__(self):
                pass

            def test_never(self):
                pass

        class TestOptedOut:
            __test__ = False

            def test_never(self):
                pass

        class Helper:
            def test_not_a_test_class(self):
                pass
    """,
    "tests/b_test.py": "def test_suffix_module():\n    pass\n",
    "tests/helpers.py": "def test_not_a_test_module():\n    pass\n",
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for relpath, source in FILES.items():
        path = tmp_path / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return tmp_path


def collected_by_pytest(root: Path, files: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
            f"--rootdir={root}", "-W", "ignore", *files]
    out = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, check=False)
    return [line for line in out.stdout.splitlines() if "::" in line]


def test_the_scan_finds_what_pytest_collects(root: Path) -> None:
    files = ["tests/test_a.py", "tests/b_test.py"]
    assert sorted(discover_tests(root, [*FILES, *files])) == sorted(
        collected_by_pytest(root, files))


def test_ids_come_in_file_then_definition_order(root: Path) -> None:
    assert discover_tests(root, ["tests/b_test.py", "tests/test_a.py"]) == [
        "tests/b_test.py::test_suffix_module",
        "tests/test_a.py::test_one",
        "tests/test_a.py::test_async_is_collected",
        "tests/test_a.py::testing_prefix_counts",
        "tests/test_a.py::test_under_if",
        "tests/test_a.py::TestOuter::test_m",
        "tests/test_a.py::TestOuter::TestInner::test_deep",
    ]


def test_non_test_files_missing_files_and_duplicates_are_skipped(root: Path) -> None:
    files = ["pkg/core.py", "tests/helpers.py", "tests/conftest.py", "tests/test_gone.py",
             "./tests/b_test.py", "tests/b_test.py", "web/app.test.js"]
    assert discover_tests(root, files) == ["tests/b_test.py::test_suffix_module"]


def test_a_file_that_does_not_parse_is_listed_whole(root: Path) -> None:
    (root / "tests/test_syntax.py").write_text("def test_x(:\n")
    assert discover_tests(root, ["tests/test_syntax.py"]) == ["tests/test_syntax.py"]


def test_paths_may_not_leave_the_root(root: Path) -> None:
    with pytest.raises(WorkspaceError):
        discover_tests(root, ["../outside/test_x.py"])
