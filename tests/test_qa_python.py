"""Python QA chains with the real tools of the venv (ruff, mypy, pytest): no broker."""

from __future__ import annotations

import ast
import asyncio
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import agents.qa.chain as qa_chain
from agents.qa import CheckStatus, QAConfig, ToolLocator, Verdict, check_file
from devline.errors import ConfigError, WorkspaceError

MODULE_OK = "import os\n\n\ndef cwd() -> str:\n    return os.getcwd()\n"


def check(path: str, files: Mapping[str, str], **kwargs: Any) -> Verdict:
    return asyncio.run(check_file(path, files, **kwargs))


def statuses(verdict: Verdict) -> dict[str, tuple[str, bool]]:
    return {c.name: (str(c.status), c.blocking) for c in verdict.checks}


def test_clean_module_passes() -> None:
    verdict = check("pkg/mod.py", {"pkg/mod.py": MODULE_OK})
    assert verdict.passed and verdict.fingerprint == "" and verdict.failing == 0
    assert statuses(verdict) == {"parse": ("pass", False), "ruff": ("pass", False)}
    assert verdict.checks[1].command[1:] == ("check", "--output-format", "json", "--no-cache",
                                             "--isolated", "--target-version", "py311",
                                             "pkg/mod.py")


def test_syntax_error_blocks_at_parse_and_skips_the_rest() -> None:
    verdict = check("tests/test_x.py", {"tests/test_x.py": "def test_a(:\n    pass\n"})
    assert not verdict.passed
    assert statuses(verdict) == {"parse": ("fail", True), "ruff": ("skipped", False),
                                 "pytest": ("skipped", False)}
    assert {c.reason for c in verdict.checks[1:]} == {"earlier check failed"}
    evidence = verdict.evidence()
    assert evidence["check"] == "parse" and evidence["lines"] == [[1, 1]]
    assert evidence["summary"].startswith("parse: SyntaxError")


def test_undefined_name_blocks() -> None:
    verdict = check("m.py", {"m.py": "import os\n\nprint(x)\n"})
    assert statuses(verdict)["ruff"] == ("fail", True)
    assert verdict.failing == 1
    evidence = verdict.evidence()
    assert evidence["summary"] == "ruff: F821 Undefined name `x` (line 3)"
    assert evidence["lines"] == [[3, 3]]
    assert evidence["command"].endswith("--isolated --target-version py311 m.py")
    # The unused import is reported too, as advice that does not block.
    assert {(f.code, f.fatal) for f in verdict.checks[1].findings} >= {("F401", False),
                                                                       ("F821", True)}
    assert [f.code for f in verdict.checks[1].introduced] == ["F821"]


def test_unused_import_is_advice_only() -> None:
    verdict = check("m.py", {"m.py": "import os\n"})
    assert verdict.passed
    ruff = verdict.checks[1]
    assert ruff.status == CheckStatus.PASS and ruff.findings[0].code == "F401"
    assert not ruff.findings[0].fatal and ruff.introduced == ()


def test_only_introduced_errors_block() -> None:
    current = "import os\n\nprint(os.sep)\nprint(x)\n"
    kept = check("m.py", {"m.py": current}, previous="print(x)\n")
    assert kept.passed
    assert statuses(kept)["ruff"] == ("fail", False)  # still failing, but not our doing
    new = check("m.py", {"m.py": current}, previous="print(1)\n")
    assert not new.passed and [f.code for f in new.checks[1].introduced] == ["F821"]
    assert check("m.py", {"m.py": current}).failing == 1  # previous=None: every fatal blocks
    # A second copy of an existing problem is new.
    twice = check("m.py", {"m.py": "print(x)\nprint(x)\n"}, previous="print(x)\n")
    assert twice.failing == 1 and twice.checks[1].introduced[0].line == 2


def test_previous_is_not_checked_when_nothing_could_block(monkeypatch: pytest.MonkeyPatch) \
        -> None:
    made: list[int] = []
    real = qa_chain._sandbox

    def counting(files: Mapping[str, str]) -> Any:
        made.append(len(files))
        return real(files)

    monkeypatch.setattr(qa_chain, "_sandbox", counting)
    assert check("m.py", {"m.py": MODULE_OK}, previous="print(x)\n").passed
    assert len(made) == 1
    check("m.py", {"m.py": "print(x)\n"}, previous="print(x)\n")
    assert len(made) == 3


def test_fingerprint_survives_a_line_shift() -> None:
    a = check("m.py", {"m.py": "print(x)\n"})
    b = check("m.py", {"m.py": "import os\n\nprint(os.sep)\n\nprint(x)\n"})
    c = check("m.py", {"m.py": "print(y)\n"})
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.checks[1].introduced[0].line != b.checks[1].introduced[0].line


def test_missing_tool_is_skipped_never_passed(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    locator = ToolLocator.default([empty], include_venv=False)
    assert locator.dirs == (empty,) and locator.find("ruff") is None
    verdict = check("tests/test_m.py", {"tests/test_m.py": "def test_a():\n    pass\n"},
                    locator=locator)
    assert statuses(verdict) == {"parse": ("pass", False), "ruff": ("skipped", False),
                                 "pytest": ("skipped", False)}
    assert "ruff not found" in verdict.checks[1].reason
    # The default search still finds the venv's tools whatever PATH says.
    assert ToolLocator.default([empty]).find("ruff") is not None


def test_tool_paths_come_first(tmp_path: Path) -> None:
    fake = tmp_path / "ruff"
    fake.write_text("#!/bin/sh\necho '[]'\nexit 0\n")
    fake.chmod(0o755)
    verdict = check("m.py", {"m.py": "print(x)\n"}, tool_paths=[tmp_path])
    assert verdict.passed and verdict.checks[1].command[0] == str(fake)


def test_unknown_chain_and_other_languages() -> None:
    with pytest.raises(ConfigError, match="unknown QA chain"):
        check("m.py", {"m.py": "x = 1\n"}, chain="bogus")
    notes = check("docs/notes.md", {"docs/notes.md": "# hi\n"})
    assert notes.passed and notes.checks == ()
    assert check("m.py", {"m.py": "print(x)\n"}, chain="off").checks == ()


@pytest.mark.parametrize("bad", ["../escape.py", "/etc/escape.py", "a/../../escape.py"])
def test_paths_that_escape_the_sandbox_are_rejected(bad: str) -> None:
    with pytest.raises(WorkspaceError):
        check("m.py", {"m.py": "x = 1\n", bad: "x = 2\n"})


def test_path_must_be_among_files() -> None:
    with pytest.raises(ValueError, match="not among the files"):
        check("m.py", {"other.py": "x = 1\n"})


PKG = {"pkg/__init__.py": "", "pkg/calc.py": "def add(a: int, b: int) -> int:\n"
                                             "    return a + b\n"}


def test_passing_test_file_passes_and_imports_its_dependencies() -> None:
    tests = "".join(f"def test_{i}():\n    assert add({i}, 1) == {i + 1}\n\n\n"
                    for i in range(5))
    files = {**PKG, "tests/test_calc.py": "from pkg.calc import add\n\n\n" + tests}
    verdict = check("tests/test_calc.py", files)
    assert verdict.passed, verdict.evidence()
    assert statuses(verdict)["pytest"] == ("pass", False)
    assert "-p" in verdict.checks[2].command and "no:cacheprovider" in verdict.checks[2].command


def test_failing_test_blocks_with_its_test_id() -> None:
    files = {**PKG, "tests/test_calc.py": "from pkg.calc import add\n\n\n"
             "def test_ok():\n    assert add(1, 1) == 2\n\n\n"
             "class TestAdd:\n    def test_wrong(self):\n        assert add(1, 1) == 3\n"}
    verdict = check("tests/test_calc.py", files)
    pytest_check = verdict.checks[2]
    assert pytest_check.status == CheckStatus.FAIL and pytest_check.blocking
    assert [(f.code, f.line) for f in pytest_check.introduced] == [
        ("tests/test_calc.py::TestAdd::test_wrong", 10)]
    assert "assert 2 == 3" in verdict.evidence()["output"]
    assert verdict.evidence()["lines"] == [[10, 10]]
    # The same test failing in the previous version does not block.
    assert check("tests/test_calc.py", files, previous=files["tests/test_calc.py"]).passed


def test_test_file_that_fails_to_import_blocks() -> None:
    verdict = check("test_m.py", {"test_m.py": "import missing_module\n\n\n"
                                               "def test_a():\n    pass\n"})
    assert statuses(verdict)["pytest"] == ("fail", True) and verdict.failing >= 1


def test_tools_get_no_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVLINE_SASL_PASSWORD", "secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret2")
    source = ("import os\n\n\n"
              "def test_env_is_minimal():\n"
              "    assert 'DEVLINE_SASL_PASSWORD' not in os.environ\n"
              "    assert os.environ['HOME'] == os.getcwd()\n\n\n"
              "def test_show_env():\n"
              "    raise AssertionError('ENV ' + repr(sorted(os.environ.items())))\n")
    verdict = check("test_env.py", {"test_env.py": source})
    pytest_check = verdict.checks[2]
    assert [f.code for f in pytest_check.introduced] == ["test_env.py::test_show_env"]
    shown = pytest_check.output.split("AssertionError: ENV ", 1)[1].split("\n")[0]
    names = {name for name, _ in ast.literal_eval(shown)}
    # PYTEST_CURRENT_TEST and PYTEST_VERSION are pytest's own, set inside the run.
    assert names - {"PYTEST_CURRENT_TEST", "PYTEST_VERSION"} == {
        "PATH", "HOME", "LANG", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "TMPDIR",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}
    assert "secret" not in pytest_check.output and "DEVLINE_SASL" not in pytest_check.output


def test_timeout_is_an_error_that_blocks_and_kills_the_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    source = ("import subprocess\nimport time\n\n\n"
              "def test_hangs():\n"
              "    child = subprocess.Popen(['sleep', '60'])\n"
              f"    open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
              "    time.sleep(60)\n")
    started = time.monotonic()
    verdict = check("test_slow.py", {"test_slow.py": source}, timeout_s=2)
    assert time.monotonic() - started < 20
    pytest_check = verdict.checks[2]
    assert pytest_check.status == CheckStatus.ERROR and pytest_check.blocking
    assert "timed out after 2s" in pytest_check.reason
    assert not verdict.passed and verdict.failing == 1
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the test's grandchild outlived the timeout"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_config_timeout_and_fatal_rules(tmp_path: Path) -> None:
    path = tmp_path / "qa.toml"
    path.write_text('[checkers.ruff]\nfatal = ["F4"]\n')
    verdict = check("m.py", {"m.py": "import os\n"}, config=QAConfig.from_file(path))
    assert not verdict.passed and verdict.checks[1].introduced[0].code == "F401"


def test_strict_chain_runs_mypy_on_this_file_only() -> None:
    files = {"dep.py": "x: int = 'not checked here'\n",
             "m.py": "import dep\n\nn: int = 'a'\nprint(dep.x)\n"}
    verdict = check("m.py", files, chain="strict")
    mypy = verdict.checks[2]
    assert mypy.name == "mypy" and mypy.status == CheckStatus.FAIL and mypy.blocking
    assert [(f.code, f.line) for f in mypy.introduced] == [("assignment", 3)]
    assert check("dep2.py", {"dep2.py": MODULE_OK}, chain="strict").passed


def test_output_is_bounded() -> None:
    source = ("def test_noisy():\n    print('x' * 200_000)\n    assert False\n")
    verdict = check("test_noisy.py", {"test_noisy.py": source})
    evidence = verdict.evidence()
    assert len(evidence["output"].encode()) <= 8192 and "bytes elided" in evidence["output"]
    assert all(len(c.output.encode()) <= 8192 for c in verdict.checks)
    record = verdict.to_record()
    assert all(len(c["output"].encode()) <= 2048 for c in record["checks"])


def test_a_tool_that_cannot_run_is_an_error(tmp_path: Path) -> None:
    broken = tmp_path / "ruff"
    broken.write_text("#!/nonexistent/interpreter\n")
    broken.chmod(0o755)
    verdict = check("m.py", {"m.py": "x = 1\n"}, tool_paths=[tmp_path])
    ruff = verdict.checks[1]
    assert ruff.status == CheckStatus.ERROR and ruff.blocking
    assert ruff.reason.startswith("cannot run ruff")
