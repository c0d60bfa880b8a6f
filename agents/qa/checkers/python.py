"""Python checkers: parse (in process), ruff, mypy, pytest."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import PurePosixPath
from typing import Any

from agents.qa.checkers.base import CheckContext, Language, Outcome, ToolOutcome, run_in_sandbox
from agents.qa.junit import parse_junit
from agents.qa.model import CheckStatus, Finding

PYTHON = frozenset({Language.PYTHON})
RUFF_FATAL = ("E9", "F63", "F7", "F82")
_TARGET = f"py{sys.version_info.major}{sys.version_info.minor}"


def is_python_test(path: str) -> bool:
    name = PurePosixPath(path).name
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


class ParseChecker:
    """`compile()` in process: syntax and the errors the compiler finds (e.g. `return`
    outside a function). Nothing runs; no tool is needed."""

    name = "parse"
    languages = PYTHON
    gate = True

    def applies(self, path: str) -> bool:
        return True

    async def run(self, ctx: CheckContext) -> Outcome:
        # A thread: a huge file must not stall the event loop of the worker.
        error = await asyncio.to_thread(_compile_error, ctx.source, ctx.path)
        if error is None:
            return Outcome(CheckStatus.PASS)
        return Outcome(CheckStatus.FAIL, output=error[1], findings=(error[0],))


def _compile_error(source: str, path: str) -> tuple[Finding, str] | None:
    try:
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        finding = Finding("parse", type(exc).__name__, exc.msg, exc.lineno,
                          exc.end_lineno or exc.lineno, fatal=True)
        text = f"{path}:{exc.lineno}: {type(exc).__name__}: {exc.msg}"
        if exc.text:
            text += "\n    " + exc.text.rstrip()
        return finding, text
    except ValueError as exc:  # source holds a NUL byte
        return Finding("parse", "ValueError", str(exc), None, None, fatal=True), str(exc)
    return None


class RuffChecker:
    """Lint with ruff's defaults, ignoring any config in the tree (`--isolated`). Only the
    `fatal` rule prefixes fail the check; the rest are advice."""

    name = "ruff"
    languages = PYTHON
    gate = False

    def applies(self, path: str) -> bool:
        return True

    async def run(self, ctx: CheckContext) -> Outcome:
        args = ("check", "--output-format", "json", "--no-cache", "--isolated",
                "--target-version", _TARGET, ctx.path)
        run = await run_in_sandbox(ctx, "ruff", args)
        if isinstance(run, Outcome):
            return run
        try:
            items: list[dict[str, Any]] = json.loads(run.stdout or "[]")
        except json.JSONDecodeError:
            items = []
            if run.returncode != 0:
                return Outcome(CheckStatus.ERROR, run.command, run.output,
                               reason=f"ruff exited {run.returncode} without a JSON report")
        fatal = ctx.options.fatal or RUFF_FATAL
        findings = []
        for item in items:
            # ruff reports syntax errors with no rule code; they are always fatal.
            code = str(item.get("code") or "syntax-error")
            start = (item.get("location") or {}).get("row")
            end = (item.get("end_location") or {}).get("row", start)
            is_fatal = code == "syntax-error" or code.startswith(fatal)
            findings.append(Finding("ruff", code, str(item.get("message", "")), start, end,
                                    fatal=is_fatal))
        status = CheckStatus.FAIL if any(f.fatal for f in findings) else CheckStatus.PASS
        return Outcome(status, run.command, _ruff_text(findings) or run.stderr,
                       tuple(findings))


def _ruff_text(findings: list[Finding]) -> str:
    # The JSON is verbose; a fixer reads one line per finding better.
    return "\n".join(f"line {f.line}: {f.code} {f.message}" + ("" if f.fatal else " [advice]")
                     for f in findings)


class MypyChecker:
    """Type errors in this file only (imports followed silently, no cache, no config from
    the tree). Every error is fatal."""

    name = "mypy"
    languages = PYTHON
    gate = False

    def applies(self, path: str) -> bool:
        return True

    async def run(self, ctx: CheckContext) -> Outcome:
        config = ctx.scratch / "mypy.ini"
        config.write_text("[mypy]\n", encoding="utf-8")
        args = ("--follow-imports=silent", "--ignore-missing-imports", "--no-incremental",
                "--show-error-codes", "--output", "json", "--cache-dir", "/dev/null",
                "--config-file", str(config), ctx.path)
        run = await run_in_sandbox(ctx, "mypy", args, python_path=True)
        if isinstance(run, Outcome):
            return run
        findings = []
        for line in run.stdout.splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            if item.get("file") != ctx.path or item.get("severity") != "error":
                continue
            findings.append(Finding("mypy", str(item.get("code") or "error"),
                                    str(item.get("message", "")), item.get("line"),
                                    item.get("line"), fatal=True))
        if run.returncode not in (0, 1) or (run.returncode == 1 and not findings
                                            and "error" not in run.stdout):
            return Outcome(CheckStatus.ERROR, run.command, run.output,
                           reason=f"mypy exited {run.returncode}")
        text = "\n".join(f"line {f.line}: error: {f.message} [{f.code}]" for f in findings)
        status = CheckStatus.FAIL if findings else CheckStatus.PASS
        return Outcome(status, run.command, text or run.output, tuple(findings))


class PytestChecker:
    """Run a test file with pytest (rootdir = sandbox, PYTHONPATH = sandbox, no cache, no
    config from the tree); each failing or erroring test is a fatal finding."""

    name = "pytest"
    languages = PYTHON
    gate = False

    def applies(self, path: str) -> bool:
        return is_python_test(path)

    async def run(self, ctx: CheckContext) -> Outcome:
        ini, report = ctx.scratch / "pytest.ini", ctx.scratch / "junit.xml"
        ini.write_text("[pytest]\njunit_family = xunit1\n", encoding="utf-8")
        report.unlink(missing_ok=True)
        args = ("-q", "-p", "no:cacheprovider", "--tb=short", "-c", str(ini),
                "--rootdir", str(ctx.work), "--junitxml", str(report), ctx.path)
        # Plugins installed in the worker's venv (hypothesis, timeout, ...) are not the plan's,
        # and loading them costs over a second per run: load only what the tree asks for.
        run = await run_in_sandbox(ctx, "pytest", args, python_path=True,
                                   extra_env={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
        if isinstance(run, Outcome):
            return run
        xml_text = report.read_text(encoding="utf-8") if report.is_file() else ""
        return _pytest_outcome(run, ctx, xml_text)


def _pytest_outcome(run: ToolOutcome, ctx: CheckContext, xml_text: str) -> Outcome:
    if run.returncode == 0:
        return Outcome(CheckStatus.PASS, run.command, run.output)
    if run.returncode == 5:
        return Outcome(CheckStatus.PASS, run.command, run.output, reason="no tests collected")
    try:
        failures = parse_junit(xml_text, ctx.path) if xml_text else []
    except ValueError:
        failures = []
    findings = tuple(Finding("pytest", f.test_id, f.kind, f.line, f.line, fatal=True)
                     for f in failures)
    if run.returncode in (1, 2):  # tests failed / collection interrupted
        reason = "" if findings else f"pytest exited {run.returncode}"
        return Outcome(CheckStatus.FAIL, run.command, run.output, findings, reason)
    return Outcome(CheckStatus.ERROR, run.command, run.output, findings,
                   reason=f"pytest exited {run.returncode} (internal or usage error)")
