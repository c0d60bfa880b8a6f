"""JavaScript and TypeScript checkers: node --check, tsc --noEmit, node --test."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from agents.qa.checkers.base import CheckContext, Language, Outcome, run_in_sandbox
from agents.qa.model import CheckStatus, Finding

JAVASCRIPT = frozenset({Language.JAVASCRIPT})
TYPESCRIPT = frozenset({Language.TYPESCRIPT})
_TEST_NAME = re.compile(r"^(?:test_.+|.+\.(?:test|spec))\.(?:js|mjs|cjs|ts|mts|cts|tsx)$")
_NODE_ERROR = re.compile(r"^(\w*Error): (.+)$", re.MULTILINE)
_NODE_WHERE = re.compile(r"^(.+):(\d+)$", re.MULTILINE)
_TSC_DIAG = re.compile(r"^(.+?)\((\d+),\d+\): (error|warning) (TS\d+): (.*)$", re.MULTILINE)
_TAP_NOT_OK = re.compile(r"^\s*not ok \d+ - (.*)$")
_TAP_LOCATION = re.compile(r"^\s*location: '(.+):(\d+):\d+'$")
_TAP_TYPE = re.compile(r"^\s*failureType: '(\w+)'$")


def is_js_test(path: str) -> bool:
    return bool(_TEST_NAME.match(PurePosixPath(path).name))


class NodeCheckChecker:
    """`node --check`: does the file parse as JavaScript (CommonJS or ESM by extension)."""

    name = "node-check"
    languages = JAVASCRIPT
    gate = True

    def applies(self, path: str) -> bool:
        return True

    async def run(self, ctx: CheckContext) -> Outcome:
        run = await run_in_sandbox(ctx, "node", ("--check", ctx.path))
        if isinstance(run, Outcome):
            return run
        if run.returncode == 0:
            return Outcome(CheckStatus.PASS, run.command, run.output)
        error = _NODE_ERROR.search(run.stderr)
        where = _NODE_WHERE.search(run.stderr)
        line = int(where.group(2)) if where and where.group(1) == ctx.path else None
        code, message = error.groups() if error else ("error", run.stderr.strip()[:300])
        finding = Finding("node-check", code, message, line, line, fatal=True)
        return Outcome(CheckStatus.FAIL, run.command, run.output, (finding,))


class TscChecker:
    """`tsc --noEmit`; only this file's diagnostics count. Uses the tree's tsconfig.json when
    it has one, else fixed options (ES2022, NodeNext modules, no strict)."""

    name = "tsc"
    languages = TYPESCRIPT
    gate = True

    def applies(self, path: str) -> bool:
        return True

    async def run(self, ctx: CheckContext) -> Outcome:
        args: tuple[str, ...] = ("--noEmit", "--pretty", "false")
        if (ctx.work / "tsconfig.json").is_file():
            args += ("-p", "tsconfig.json")
        else:
            args += ("--target", "es2022", "--module", "nodenext", "--jsx", "preserve",
                     "--skipLibCheck")
            exe = ctx.tools.find("tsc")
            # @types installed next to TypeScript (bootstrap adds @types/node), so node
            # built-ins type-check without a node_modules in the sandbox.
            types = exe.parent.parent / "@types" if exe else None
            if exe and types and types.is_dir():
                args += ("--typeRoots", str(types))
            args += (ctx.path,)
        run = await run_in_sandbox(ctx, "tsc", args)
        if isinstance(run, Outcome):
            return run
        diagnostics = _TSC_DIAG.findall(run.stdout)
        findings = tuple(Finding("tsc", code, message.strip(), int(line), int(line),
                                 fatal=level == "error")
                         for file, line, level, code, message in diagnostics
                         if file == ctx.path)
        if run.returncode != 0 and not diagnostics:
            return Outcome(CheckStatus.ERROR, run.command, run.output,
                           reason=f"tsc exited {run.returncode} without diagnostics")
        status = CheckStatus.FAIL if any(f.fatal for f in findings) else CheckStatus.PASS
        return Outcome(status, run.command, run.output, findings)


class NodeTestChecker:
    """`node --test` on a test file (TAP report); each failing test is a fatal finding."""

    name = "node-test"
    languages = JAVASCRIPT | TYPESCRIPT
    gate = False

    def applies(self, path: str) -> bool:
        return is_js_test(path)

    async def run(self, ctx: CheckContext) -> Outcome:
        if PurePosixPath(ctx.path).suffix in {".ts", ".mts", ".cts", ".tsx"}:
            return Outcome(CheckStatus.SKIPPED,
                           reason="node --test runs JavaScript; this node cannot run .ts")
        run = await run_in_sandbox(ctx, "node", ("--test", "--test-reporter=tap", ctx.path))
        if isinstance(run, Outcome):
            return run
        if run.returncode == 0:
            return Outcome(CheckStatus.PASS, run.command, run.output)
        findings = tuple(_tap_failures(run.stdout, ctx.path))
        reason = "" if findings else f"node --test exited {run.returncode}"
        return Outcome(CheckStatus.FAIL, run.command, run.output, findings, reason)


def _tap_failures(tap: str, path: str) -> list[Finding]:
    found: list[Finding] = []
    name: str | None = None
    line: int | None = None
    kind = ""

    def flush() -> None:
        # A parent that failed only because a subtest did adds nothing new.
        if name is not None and kind != "subtestsFailed":
            found.append(Finding("node-test", f"{path}::{name}", "failed", line, line,
                                 fatal=True))

    for text in tap.splitlines():
        if match := _TAP_NOT_OK.match(text):
            flush()
            name, line, kind = match.group(1).strip(), None, ""
        elif name is not None and (match := _TAP_LOCATION.match(text)):
            line = int(match.group(2)) if match.group(1) == path else line
        elif name is not None and (match := _TAP_TYPE.match(text)):
            kind = match.group(1)
    flush()
    return found
