"""JavaScript/TypeScript QA chains with the machine's node (and tsc when bootstrap installed
it under .cache/node): no broker."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents.qa import CheckStatus, ToolLocator, Verdict, check_file

# Node is on every machine we run on and scripts/bootstrap installs tsc where npm exists:
# a missing one fails here (the checker's own "skipped" is tested with a forced absence).
assert shutil.which("node"), "node is not installed: these checks need Node 20"

NODE_TEST = ('const test = require("node:test");\nconst assert = require("node:assert");\n'
             'const { add } = require("./add.js");\n\n'
             'test("adds", () => { assert.strictEqual(add(1, 1), 2); });\n'
             'test("is wrong", () => { assert.strictEqual(add(1, 1), {want}); });\n')
ADD = "exports.add = (a, b) => a + b;\n"


def check(path: str, files: Mapping[str, str], **kwargs: Any) -> Verdict:
    return asyncio.run(check_file(path, files, **kwargs))


def test_valid_module_passes_node_check() -> None:
    verdict = check("web/add.js", {"web/add.js": ADD})
    assert verdict.passed
    assert [(c.name, c.status) for c in verdict.checks] == [("node-check", CheckStatus.PASS)]
    assert verdict.checks[0].command[1:] == ("--check", "web/add.js")


def test_broken_js_blocks_at_node_check() -> None:
    verdict = check("web/app.test.js", {"web/app.test.js": "const x = ;\n"})
    assert not verdict.passed
    node_check, node_test = verdict.checks
    assert node_check.blocking and node_check.introduced[0].code == "SyntaxError"
    assert node_check.introduced[0].line == 1
    assert node_test.status == CheckStatus.SKIPPED and node_test.reason == "earlier check failed"
    assert verdict.evidence()["summary"].startswith("node-check: SyntaxError")
    # The sandbox path is not in what a fixer reads.
    assert "devline-qa-" not in verdict.evidence()["output"]


def test_node_test_failure_blocks_with_the_test_name() -> None:
    files = {"web/add.js": ADD, "web/add.test.js": NODE_TEST.replace("{want}", "3")}
    verdict = check("web/add.test.js", files)
    node_test = verdict.checks[1]
    assert node_test.status == CheckStatus.FAIL and node_test.blocking
    assert [(f.code, f.line) for f in node_test.introduced] == [
        ("web/add.test.js::is wrong", 6)]
    assert check("web/add.test.js", files, previous=files["web/add.test.js"]).passed


def test_node_test_pass() -> None:
    files = {"web/add.js": ADD, "web/test_add.js": NODE_TEST.replace("{want}", "2")}
    verdict = check("web/test_add.js", files)
    assert verdict.passed
    assert [c.status for c in verdict.checks] == [CheckStatus.PASS, CheckStatus.PASS]


def test_tsc_missing_is_skipped(tmp_path: Path) -> None:
    verdict = check("src/a.ts", {"src/a.ts": "const n: number = 'a';\n"},
                    locator=ToolLocator((tmp_path,)))
    assert verdict.passed
    assert verdict.checks[0].status == CheckStatus.SKIPPED
    assert "tsc not found" in verdict.checks[0].reason


def test_tsc_reports_this_files_errors_only() -> None:
    assert ToolLocator.default().find("tsc"), "tsc not installed: run scripts/bootstrap"
    files = {"src/dep.ts": "export const d: number = 'other file';\n",
             "src/a.ts": ('import { d } from "./dep";\nimport * as fs from "node:fs";\n'
                          "export const n: number = d + fs.readdirSync('.').length;\n"
                          "export const s: string = n;\n")}
    verdict = check("src/a.ts", files)
    tsc = verdict.checks[0]
    assert tsc.blocking and [(f.code, f.line) for f in tsc.introduced] == [("TS2322", 4)]
    fixed = {**files, "src/a.ts": files["src/a.ts"].replace(": string = n", " = n")}
    assert check("src/a.ts", fixed).passed


def test_ts_test_files_are_not_run_by_node() -> None:
    verdict = check("src/a.test.ts", {"src/a.test.ts": "export const x = 1;\n"})
    node_test = verdict.checks[-1]
    assert node_test.name == "node-test" and node_test.status == CheckStatus.SKIPPED
